/**
 * What fine-tuning takes from the user's images (src/train/finetune.ts, src/train/augment.ts): the
 * labels of the class folders mixed into the loss, augmentation of colour images by default only,
 * and the epoch chosen on fitting images set aside, never on the held-out images it reports on.
 */
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { useBackend } from '../../src/runtime/backend.js';
import { compressModel } from '../../src/commands/compress.js';
import { DEFAULT_PIXELS, decodeRaw } from '../../src/data/images.js';
import { loadModel, saveModel } from '../../src/model/io.js';
import { mulberry32 } from '../../src/runtime/random.js';
import { silentReporter, type ReconstructOptions } from '../../src/reconstruct/index.js';
import { loadImages, planImages, type ImageStores } from '../../src/data/plan.js';
import { AUGMENT_BELOW_IMAGES, augmentFor, augmentImage, maxShift } from '../../src/train/augment.js';
import { FINETUNE_LR, MIN_FINETUNE_LR, carveValidation, finetune, loadFinetuneImages, logitsOf, type FinetuneImages, type FinetuneOptions } from '../../src/train/finetune.js';
import { CHARCNN, FASHION_TEST, FASHION_TRAIN, FIXTURES, cli, imageSubset, teachableModel, tempDir } from '../helpers.js';

const CIFAR = path.join(FIXTURES, 'cifar', 'model.json');
const CIFAR_TRAIN = path.join(FIXTURES, 'cifar10', 'train');
const CIFAR_TEST = path.join(FIXTURES, 'cifar10', 'test');

before(async () => {
  await useBackend('wasm');
});

function options(fit: string, held: string): ReconstructOptions {
  return { data: fit, evalData: held, holdout: 0.2, samples: 1000, joint: true, iterations: 0, batch: 32, seed: 1, pixels: DEFAULT_PIXELS };
}

async function prepare(model: tf.LayersModel, o: ReconstructOptions): Promise<{ s: ImageStores; trainImages: FinetuneImages }> {
  const carved = carveValidation(planImages(o), o.seed);
  const s = await loadImages(model, carved.plan, o);
  return { s, trainImages: await loadFinetuneImages(carved.plan, carved.validation, s, o.pixels) };
}

const tuning = (o: Partial<FinetuneOptions>): FinetuneOptions => ({ epochs: 3, layers: 'all', batch: 16, seed: 1, labelWeight: 0, augment: 'auto', ...o });

/**
 * Fashion images from `source` with every folder holding the next class's images (trousers labelled
 * t-shirt, …): labels the original disagrees with on every image.
 */
function rotatedLabels(source: string, perClass: number): string {
  const dir = tempDir('lowrank-rotated-');
  const classes = fs.readdirSync(source).sort();
  classes.forEach((cls, i) => {
    const from = path.join(source, classes[(i + 1) % classes.length]);
    fs.mkdirSync(path.join(dir, cls));
    for (const f of fs.readdirSync(from).sort().slice(0, perClass)) fs.copyFileSync(path.join(from, f), path.join(dir, cls, f));
  });
  return dir;
}

/** Share of the held-out images whose top-1 class is their folder's label. */
async function labelAccuracy(model: tf.LayersModel, s: ImageStores): Promise<number> {
  let hit = 0;
  for await (const b of s.holdout.batches()) {
    const top = tf.tidy(() => (model.predict(b.x) as tf.Tensor).argMax(1).dataSync());
    b.labels.forEach((l, i) => (hit += Number(top[i] === l)));
    b.x.dispose();
  }
  return hit / s.holdout.count;
}

describe('fine-tuning with the user\'s labels', () => {
  test('the cross-entropy term teaches the labels of the folders; without it the original\'s classes stay', async () => {
    const { model: teacher } = await loadModel(CHARCNN);
    const o = options(rotatedLabels(FASHION_TRAIN, 8), rotatedLabels(FASHION_TEST, 4));
    const { s, trainImages } = await prepare(teacher, o);
    const results: Record<string, number> = {};
    for (const labelWeight of [0, 10]) {
      const student = await compressModel(teacher, { scheme: '2', basis: 'per-channel', separable: false, rank: 16, layers: ['conv2'] });
      const report = await finetune(teacher, student.model, ['conv2_v', 'conv2_h'], trainImages, tuning({ labelWeight }), silentReporter);
      assert.equal(report.labelWeight, labelWeight);
      results[labelWeight] = await labelAccuracy(student.model, s);
      student.model.dispose();
    }
    const original = await labelAccuracy(teacher, s);
    assert.ok(original <= 0.1, `the original agrees with the rotated labels on ${original}`);
    assert.ok(results[0] <= 0.15, `distillation alone: ${results[0]}`);
    assert.ok(results[10] >= 0.3, `with the labels: ${results[10]} (without: ${results[0]})`);
    teacher.dispose();
  });

  test('images without class folders fine-tune by distillation alone (label weight 0 in the report)', async () => {
    const { model: teacher } = await loadModel(CHARCNN);
    const flat = tempDir('lowrank-flat-');
    for (const cls of fs.readdirSync(FASHION_TRAIN).sort()) {
      for (const f of fs.readdirSync(path.join(FASHION_TRAIN, cls)).sort().slice(0, 3)) fs.copyFileSync(path.join(FASHION_TRAIN, cls, f), path.join(flat, `${cls}-${f}`));
    }
    const { s, trainImages } = await prepare(teacher, options(flat, imageSubset(FASHION_TEST, 1)));
    const student = await compressModel(teacher, { scheme: '2', basis: 'per-channel', separable: false, rank: 16, layers: ['conv2'] });
    const report = await finetune(teacher, student.model, ['conv2_v', 'conv2_h'], trainImages, tuning({ epochs: 1, labelWeight: 5 }), silentReporter);
    assert.equal(report.labelWeight, 0);
    student.model.dispose();
    teacher.dispose();
  });
});

describe('augmentation', () => {
  test('on by default for colour inputs and few images, off for grayscale or many images, as the user says otherwise', () => {
    const gray = { height: 24, width: 24, channels: 1 };
    const colour = { height: 32, width: 32, channels: 3 };
    assert.equal(augmentFor('auto', gray, 500), false);
    assert.equal(augmentFor('auto', colour, 500), true);
    assert.equal(augmentFor('auto', colour, AUGMENT_BELOW_IMAGES), false);
    assert.equal(augmentFor('on', gray, 500), true);
    assert.equal(augmentFor('on', colour, 5000), true);
    assert.equal(augmentFor('off', colour, 500), false);
    assert.equal(maxShift(colour), 4);
  });

  test('each augmented image is the image shifted by at most maxShift (black fill), mirrored or not', async () => {
    const size = { height: 32, width: 32, channels: 3 };
    const file = path.join(CIFAR_TRAIN, 'horse', fs.readdirSync(path.join(CIFAR_TRAIN, 'horse')).sort()[0]);
    const raw = (await decodeRaw(file, size, DEFAULT_PIXELS)) as Uint8Array;
    const random = mulberry32(3);
    const seen = new Set<string>();
    const s = maxShift(size);
    for (let k = 0; k < 40; k++) {
      const out = augmentImage(raw, size, random);
      assert.equal(out.constructor, Uint8Array);
      // Find the shift and flip that explain every pixel.
      let explained: string | null = null;
      for (const flip of [false, true]) {
        for (let dy = -s; dy <= s && !explained; dy++) {
          for (let dx = -s; dx <= s && !explained; dx++) {
            let ok = true;
            for (let y = 0; y < 32 && ok; y++) {
              for (let x = 0; x < 32 && ok; x++) {
                const sy = y + dy;
                const sx = (flip ? 31 - x : x) + dx;
                for (let c = 0; c < 3 && ok; c++) {
                  const want = sy < 0 || sy >= 32 || sx < 0 || sx >= 32 ? 0 : raw[(sy * 32 + sx) * 3 + c];
                  ok = out[(y * 32 + x) * 3 + c] === want;
                }
              }
            }
            if (ok) explained = `${flip} ${dy} ${dx}`;
          }
        }
      }
      assert.ok(explained, `augmented image ${k} is no shift or flip of the image`);
      seen.add(explained!);
    }
    assert.ok([...seen].some((e) => e.startsWith('true')) && [...seen].some((e) => e.startsWith('false')), 'both mirrored and not');
    assert.ok(seen.size >= 20, `only ${seen.size} different augmentations in 40`);
  });

  test('compress --finetune augments the colour CIFAR fixture by default and the grayscale charcnn only when asked', async () => {
    const run = async (model: string, fit: string, held: string, extra: string[]) => {
      const r = await cli([
        'compress', model, '--scheme', '2', '--rank', '8', '--data', fit, '--eval-data', held, '--iterations', '2', '--out', path.join(tempDir(), 'out'),
        '--finetune', '--epochs', '1', '--json', ...extra,
      ]);
      assert.equal(r.code, 0, r.stderr);
      return JSON.parse(r.stdout).finetune;
    };
    const cifar = await run(CIFAR, imageSubset(CIFAR_TRAIN, 2), imageSubset(CIFAR_TEST, 1), []);
    assert.equal(cifar.augmented, true);
    const fashion = await run(CHARCNN, imageSubset(FASHION_TRAIN, 2), imageSubset(FASHION_TEST, 1), []);
    assert.equal(fashion.augmented, false);
    const forced = await run(CHARCNN, imageSubset(FASHION_TRAIN, 2), imageSubset(FASHION_TEST, 1), ['--augment', 'on']);
    assert.equal(forced.augmented, true);
  });

  test('compress --finetune trains the factor layers of a model nested as Teachable Machine exports it, on its head\'s logits', async () => {
    const dir = tempDir();
    await saveModel(teachableModel(true), path.join(dir, 'tm'));
    const out = path.join(dir, 'out');
    const fit = imageSubset(CIFAR_TRAIN, 3);
    const held = imageSubset(CIFAR_TEST, 1);
    const run = async (extra: string[]) => {
      const r = await cli([
        'compress', path.join(dir, 'tm', 'model.json'), '--scheme', 'channel', '--rank', 'expand=4,last_conv=6', '--data', fit, '--eval-data', held,
        '--iterations', '0', '--out', out, '--force', '--finetune', '--epochs', '1', '--json', ...extra,
      ]);
      assert.equal(r.code, 0, r.stderr);
      return JSON.parse(r.stdout).finetune;
    };
    const report = await run([]);
    // Trained whole, its 9 kernels (stem, expand_a/_b, dw, project, last_conv_a/_b, head_dense, head_out)
    // share the step the 4 factor layers take alone: 6 layers' worth.
    const whole = await run(['--finetune-layers', 'all']);
    assert.ok(Math.abs(whole.step - (report.step * 6) / 9) < 1e-9, `step ${whole.step} for 9 layers, ${report.step} for 4`);
    // The two channel replacements' factors and biases: expand 8→4→24, last_conv 12→6→32.
    assert.equal(report.trainedWeights, 8 * 4 + 4 * 24 + 24 + 12 * 6 + 6 * 32 + 32);
    assert.equal(report.epochs, 1);
    // The head ends in a softmax inside its own Sequential: distillation reads the logits before it.
    assert.equal(report.target, 'logits');
    const model = teachableModel(true);
    const x = tf.randomUniform([3, 16, 16, 3], -1, 1, 'float32', 5) as tf.Tensor4D;
    const logits = logitsOf(model);
    const gap = tf.tidy(() => tf.softmax(logits.fn(x)).sub(model.predict(x) as tf.Tensor).abs().max().dataSync()[0]);
    assert.ok(gap < 1e-6, `softmax of the logits differs from the outputs by ${gap}`);
    tf.dispose(x);
  });
});

describe('model selection', () => {
  test('the validation images are a seeded tenth of the fitting images, apart from those fitted on', () => {
    const o = options(FASHION_TRAIN, FASHION_TEST);
    const plan = planImages(o);
    const a = carveValidation(plan, 1);
    const b = carveValidation(plan, 1);
    assert.deepEqual(a.validation, b.validation);
    assert.equal(a.validation.length, 100);
    assert.equal(a.plan.fit.length, plan.fit.length - 100);
    const fitted = new Set(a.plan.fit.map((e) => e.file));
    assert.ok(a.validation.every((e) => !fitted.has(e.file)));
    assert.deepEqual(a.plan.holdout, plan.holdout);
    assert.notDeepEqual(carveValidation(plan, 2).validation, a.validation);
  });

  test('the epoch kept does not depend on the held-out images reported on', async () => {
    const { model: teacher } = await loadModel(CHARCNN);
    const fit = imageSubset(FASHION_TRAIN, 8);
    // Held-out images on which fine-tuning helps (the test split) and on which it may not (inverted pixels).
    const inverted = tempDir('lowrank-inverted-');
    const sharp = (await import('sharp')).default;
    const test = imageSubset(FASHION_TEST, 4);
    for (const cls of fs.readdirSync(test)) {
      fs.mkdirSync(path.join(inverted, cls));
      for (const f of fs.readdirSync(path.join(test, cls))) await sharp(path.join(test, cls, f)).negate().toFile(path.join(inverted, cls, f));
    }
    const kept: { epoch: number; weights: Float32Array[]; heldOut: number[] }[] = [];
    for (const held of [test, inverted]) {
      const { s, trainImages } = await prepare(teacher, options(fit, held));
      const student = await compressModel(teacher, { scheme: '2', basis: 'per-channel', separable: false, rank: 4, layers: ['conv2'] });
      const report = await finetune(teacher, student.model, ['conv2_v', 'conv2_h'], trainImages, tuning({ epochs: 4, layers: 'factors' }), silentReporter);
      kept.push({
        epoch: report.bestEpoch,
        weights: student.model.getWeights().map((w) => w.dataSync() as Float32Array),
        heldOut: [report.heldOut.error.data, report.heldOut.error.finetuned],
      });
      student.model.dispose();
    }
    assert.notDeepEqual(kept[0].heldOut, kept[1].heldOut, 'two different held-out sets');
    assert.equal(kept[0].epoch, kept[1].epoch);
    kept[0].weights.forEach((w, i) => assert.deepEqual(w, kept[1].weights[i]));
    teacher.dispose();
  });
  test('fine-tuning trains on every fitting image, the layer-wise fit on --samples of them', async () => {
    const { model: teacher } = await loadModel(CHARCNN);
    const o = { ...options(imageSubset(FASHION_TRAIN, 8), imageSubset(FASHION_TEST, 2)), samples: 20 };
    const carved = carveValidation(planImages(o), o.seed);
    assert.deepEqual([carved.plan.fit.length, carved.validation.length, carved.plan.pool.length], [20, 8, 72]);
    const pool = new Set(carved.plan.pool.map((e) => e.file));
    assert.ok(carved.plan.fit.every((e) => pool.has(e.file)));
    assert.ok(carved.validation.every((e) => !pool.has(e.file)));
    const s = await loadImages(teacher, carved.plan, o);
    const images = await loadFinetuneImages(carved.plan, carved.validation, s, o.pixels);
    assert.deepEqual([s.fit.count, images.train.count, images.validation.count], [20, 72, 8]);
    const student = await compressModel(teacher, { scheme: '2', basis: 'per-channel', separable: false, rank: 4, layers: ['conv2'] });
    const report = await finetune(teacher, student.model, ['conv2_v', 'conv2_h'], images, tuning({ epochs: 1, layers: 'factors' }), silentReporter);
    assert.equal(report.trainImages, 72);
    student.model.dispose();
    // A student starting closer to the teacher takes smaller steps.
    const close = await compressModel(teacher, { scheme: '2', basis: 'per-channel', separable: false, rank: 128, layers: ['conv2'] });
    const closeReport = await finetune(teacher, close.model, ['conv2_v', 'conv2_h'], images, tuning({ epochs: 1, layers: 'factors' }), silentReporter);
    assert.ok(closeReport.heldOut.error.data < report.heldOut.error.data / 2, `${closeReport.heldOut.error.data} vs ${report.heldOut.error.data}`);
    assert.ok(closeReport.step < report.step / 2, `step ${closeReport.step} vs ${report.step} at held-out errors ${closeReport.heldOut.error.data} vs ${report.heldOut.error.data}`);
    assert.ok(report.step <= FINETUNE_LR && closeReport.step >= MIN_FINETUNE_LR);
    close.model.dispose();
    teacher.dispose();
  });
});
