/**
 * Fine-tuning by distillation (src/train/finetune.ts) on the fixture with small image folders:
 * a student that already equals its teacher stays as it is, a compressed student gets closer to
 * its teacher on held-out images, and `compress --finetune` writes a stock model with the same
 * layers as without it.
 */
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { useBackend } from '../../src/runtime/backend.js';
import { compressModel } from '../../src/commands/compress.js';
import { factorize } from '../../src/plan/plan.js';
import { planCompression } from '../../src/plan/choose.js';
import { DEFAULT_PIXELS } from '../../src/data/images.js';
import { loadModel, saveModel } from '../../src/model/io.js';
import { dataReconstruction } from '../../src/reconstruct/report.js';
import { silentReporter, type ReconstructOptions } from '../../src/reconstruct/index.js';
import { loadImages, planImages, type ImagePlan, type ImageStores } from '../../src/data/plan.js';
import { DEFAULT_LABEL_WEIGHT, carveValidation, clearlyBetter, finetune, loadFinetuneImages, type FinetuneImages } from '../../src/train/finetune.js';
import { CHARCNN, FASHION_TEST, FASHION_TRAIN, ROOT, cli, errorLine, imageSubset, tempDir } from '../helpers.js';

before(async () => {
  await useBackend('wasm');
});

function options(fit: string, held: string, iterations: number): ReconstructOptions {
  return { data: fit, evalData: held, holdout: 0.2, samples: 1000, joint: true, iterations, batch: 32, seed: 1, pixels: DEFAULT_PIXELS };
}

/** The images as the pipeline prepares them for --finetune: fitting, validation (set aside first) and held-out. */
async function prepare(model: tf.LayersModel, o: ReconstructOptions): Promise<{ s: ImageStores; tuning: FinetuneImages; images: ImagePlan }> {
  const carved = carveValidation(planImages(o), o.seed);
  const s = await loadImages(model, carved.plan, o);
  return { s, tuning: await loadFinetuneImages(carved.plan, carved.validation, s, o.pixels), images: carved.plan };
}

/** The model's outputs (or, with `layer`, that layer's output) on every held-out image. */
async function outputs(model: tf.LayersModel, s: ImageStores, layer?: string): Promise<Float32Array[]> {
  const out: Float32Array[] = [];
  const sub = layer ? tf.model({ inputs: model.inputs, outputs: model.getLayer(layer).output as tf.SymbolicTensor }) : model;
  for await (const b of s.holdout.batches()) {
    out.push(tf.tidy(() => (sub.predict(b.x) as tf.Tensor).dataSync() as Float32Array));
    b.x.dispose();
  }
  return out;
}

/** ‖a − b‖ / ‖b‖ over all batches. */
function relativeError(a: Float32Array[], b: Float32Array[]): number {
  let e = 0;
  let n = 0;
  a.forEach((x, k) => x.forEach((v, i) => {
    e += (v - b[k][i]) ** 2;
    n += b[k][i] ** 2;
  }));
  return Math.sqrt(e / n);
}

describe('fine-tuning by distillation', () => {
  test('without labels in the loss, a student that already equals its teacher (full rank) is left unchanged', async () => {
    const { model: teacher } = await loadModel(CHARCNN);
    // Few images: a full-rank student trains slowly, and unchanged weights need no more than a few steps to show.
    const o = options(imageSubset(FASHION_TRAIN, 3), imageSubset(FASHION_TEST, 2), 0);
    const { s, tuning } = await prepare(teacher, o);
    const student = await compressModel(teacher, { scheme: '2', basis: 'per-channel', separable: false, rank: 432, layers: ['conv2'], allowSlower: true });
    const before = await outputs(student.model, s);
    assert.ok(relativeError(before, await outputs(teacher, s)) < 1e-4, 'full-rank Scheme 2 reproduces the teacher');
    const weightsBefore = student.model.getWeights().map((w) => w.dataSync().slice());
    const report = await finetune(teacher, student.model, ['conv2_v', 'conv2_h'], tuning, { epochs: 2, layers: 'factors', batch: 16, seed: 1, labelWeight: 0, augment: 'auto' }, silentReporter);
    assert.equal(report.epochs, 2);
    const after = await outputs(student.model, s);
    assert.ok(relativeError(after, before) < 1e-4, `outputs moved by ${relativeError(after, before).toExponential(2)}`);
    student.model.getWeights().forEach((w, i) => {
      const a = w.dataSync();
      let diff = 0;
      let scale = 0;
      a.forEach((v, k) => {
        diff = Math.max(diff, Math.abs(v - weightsBefore[i][k]));
        scale = Math.max(scale, Math.abs(weightsBefore[i][k]));
      });
      assert.ok(diff <= 1e-3 * scale, `weight ${i} moved by ${diff} (max ${scale})`);
    });
    student.model.dispose();
    teacher.dispose();
  });

  /** The character CNN at conv2=4, conv3=8 fitted layer-wise on `perClass` Fashion-MNIST images of each class, and 3 epochs of fine-tuning it. */
  async function lowRankFinetune(perClass: number) {
    const { model: teacher, topology } = await loadModel(CHARCNN);
    const o = options(imageSubset(FASHION_TRAIN, perClass), imageSubset(FASHION_TEST, 10), 20);
    const plan = planCompression(teacher, { scheme: '2', basis: 'per-channel', separable: false, rank: new Map([['conv2', 4], ['conv3', 8]]), layers: ['conv2', 'conv3'] }, topology);
    const { s, tuning, images } = await prepare(teacher, o);
    assert.deepEqual([s.fit.count, tuning.validation.count], [9, 1].map((k) => k * perClass));
    const data = await dataReconstruction({ model: teacher, topology }, factorize(plan, topology), { stores: s, images, options: o, reporter: silentReporter });
    const layerWiseWeights = data.built.model.getWeights().map((w) => w.dataSync().slice());
    // The logits: the input of the fixture's final softmax.
    const target = await outputs(teacher, s, 'flatten');
    const layerWise = relativeError(await outputs(data.built.model, s, 'flatten'), target);
    const report = await finetune(teacher, data.built.model, ['conv2_v', 'conv2_h', 'conv3_v', 'conv3_h'], tuning, { epochs: 3, layers: 'factors', batch: 16, seed: 1, labelWeight: DEFAULT_LABEL_WEIGHT, augment: 'auto' }, silentReporter);
    return { teacher, data, s, target, layerWise, layerWiseWeights, report };
  }

  test('on 400 fitting images at low ranks, fine-tuning lowers the held-out output error of the layer-wise fit', async () => {
    const { teacher, data, s, target, layerWise, report } = await lowRankFinetune(40);
    const tuned = relativeError(await outputs(data.built.model, s, 'flatten'), target);
    assert.equal(report.kept, 'finetuned');
    assert.ok(report.heldOut.error.finetuned < report.heldOut.error.data);
    assert.ok(Math.abs(report.heldOut.error.data - layerWise) < 1e-4 && Math.abs(report.heldOut.error.finetuned - tuned) < 1e-4, 'the report measures what it says');
    assert.ok(tuned < 0.95 * layerWise, `held-out logit error ${layerWise.toFixed(4)} → ${tuned.toFixed(4)}`);
    data.built.model.dispose();
    teacher.dispose();
  });

  test('an epoch whose validation gain is within the noise of 15 images set aside is not kept', async () => {
    const { teacher, data, layerWiseWeights, report } = await lowRankFinetune(15);
    // Some epoch scored lower on the 15 images, but not by more than KEEP_MARGIN standard errors.
    assert.ok(report.withinNoise && report.withinNoise.loss < report.validation.loss.data, JSON.stringify(report.withinNoise));
    assert.equal(report.kept, 'data');
    assert.equal(report.bestEpoch, 0);
    assert.equal(report.validation.loss.finetuned, report.validation.loss.data);
    data.built.model.getWeights().forEach((w, i) => assert.deepEqual(w.dataSync(), layerWiseWeights[i], `weight ${i} is the layer-wise fit's`));
    data.built.model.dispose();
    teacher.dispose();
  });

  test('clearlyBetter: a paired test on the same images, not a lower sum alone', () => {
    const losses = (squared: number[]) => ({ squared: Float64Array.from(squared), crossEntropy: new Float64Array(squared.length) });
    const base = losses([0.1, 0.2, 0.3, 0.4, 0.5, 0.6]);
    // Every image a little better: clear, however small.
    assert.equal(clearlyBetter(losses([0.09, 0.19, 0.29, 0.39, 0.49, 0.58]), base, 0), true);
    // A lower sum from one image while the others got worse: noise.
    assert.equal(clearlyBetter(losses([0.0, 0.25, 0.35, 0.45, 0.55, 0.35]), base, 0), false);
    // Worse is never better.
    assert.equal(clearlyBetter(losses([0.11, 0.21, 0.31, 0.41, 0.51, 0.61]), base, 0), false);
    // The labels' term counts at its weight.
    const labelled = { squared: base.squared, crossEntropy: Float64Array.from([1, 1, 1, 1, 1, 1]) };
    assert.equal(clearlyBetter({ squared: base.squared, crossEntropy: Float64Array.from([0.9, 0.9, 0.8, 0.9, 0.9, 0.9]) }, labelled, 0.1), true);
    assert.equal(clearlyBetter({ squared: base.squared, crossEntropy: Float64Array.from([0.9, 0.9, 0.8, 0.9, 0.9, 0.9]) }, labelled, 0), false);
  });

  test('compress --finetune writes a stock model with the same layers as without it, and reports the fine-tuning', async () => {
    const fit = imageSubset(FASHION_TRAIN, 15);
    const held = imageSubset(FASHION_TEST, 3);
    const common = [
      'compress', CHARCNN, '--scheme', '2', '--rank', 'conv2=4,conv3=8', '--data', fit, '--eval-data', held, '--iterations', '5', '--batch', '16', '--json',
    ];
    const plainOut = path.join(tempDir(), 'plain');
    const tunedOut = path.join(tempDir(), 'tuned');
    const plain = await cli([...common, '--out', plainOut]);
    const tuned = await cli([...common, '--out', tunedOut, '--finetune', '--epochs', '3', '--finetune-layers', 'factors']);
    assert.equal(plain.code, 0, plain.stderr);
    assert.equal(tuned.code, 0, tuned.stderr);
    const report = JSON.parse(tuned.stdout);
    assert.deepEqual(Object.keys(report.accuracy), ['original', 'filter', 'data', 'finetuned']);
    assert.equal(report.finetune.epochs, 3);
    // 15 images set aside cannot tell the epochs apart (see the test above): the layer-wise fit is kept and said to be.
    assert.equal(report.finetune.kept, 'data');
    assert.ok(report.finetune.withinNoise === null || report.finetune.withinNoise.epoch > 0);
    assert.equal(report.finetune.target, 'logits');
    // Both outputs loaded by stock tfjs in one fresh process.
    const script = `
      import * as tf from '@tensorflow/tfjs';
      import * as fs from 'node:fs';
      for (const dir of ${JSON.stringify([plainOut, tunedOut])}) {
        const json = JSON.parse(fs.readFileSync(dir + '/model.json', 'utf8'));
        const data = Buffer.concat(json.weightsManifest.flatMap((g) => g.paths.map((p) => fs.readFileSync(dir + '/' + p))));
        const model = await tf.loadLayersModel(tf.io.fromMemory({ modelTopology: json.modelTopology, weightSpecs: json.weightsManifest.flatMap((g) => g.weights), weightData: data.buffer.slice(data.byteOffset, data.byteOffset + data.length) }));
        const y = model.predict(tf.randomUniform([3, 24, 24, 1], 0, 1, 'float32', 7));
        console.log(JSON.stringify({ layers: model.layers.map((l) => l.name), y: Array.from(y.dataSync()) }));
      }
    `;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { cwd: ROOT, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const [a, b] = r.stdout.trim().split('\n').slice(-2).map((line) => JSON.parse(line));
    assert.deepEqual(b.layers, a.layers);
    assert.deepEqual(b.layers, ['conv1', 'conv2_v', 'conv2_h', 'conv3_v', 'conv3_h', 'conv4', 'flatten', 'softmax']);
    assert.notDeepEqual(b.y, a.y, 'the fine-tuned weights were written');
  });

  test('fine-tuning flags need --data and --finetune', async () => {
    const out = path.join(tempDir(), 'out');
    const noData = await cli(['compress', CHARCNN, '--scheme', '2', '--rank', '8', '--out', out, '--finetune']);
    assert.equal(noData.code, 1);
    assert.match(errorLine(noData), /--finetune applies to data reconstruction: give --data/);
    const noFinetune = await cli(['compress', CHARCNN, '--scheme', '2', '--rank', '8', '--out', out, '--data', FASHION_TEST, '--epochs', '3']);
    assert.equal(noFinetune.code, 1);
    assert.match(errorLine(noFinetune), /--epochs applies to fine-tuning: give --finetune too/);
    const badEpochs = await cli(['compress', CHARCNN, '--scheme', '2', '--rank', '8', '--out', out, '--data', FASHION_TEST, '--finetune', '--epochs', '0']);
    assert.equal(badEpochs.code, 1);
    assert.match(errorLine(badEpochs), /--epochs 0: give a whole number ≥ 1/);
    assert.ok(!fs.existsSync(out), 'nothing written');
  });

  test('a batch normalization without a scale (as in InceptionV3) is refused before any work: tfjs\' gradient fails on it', async () => {
    for (const scale of [false, true]) {
      const model = tf.sequential({
        layers: [
          tf.layers.conv2d({ name: 'conv', inputShape: [24, 24, 1], filters: 8, kernelSize: 3, useBias: false }),
          tf.layers.batchNormalization({ name: 'bn', scale }),
          tf.layers.reLU(),
          tf.layers.conv2d({ name: 'mix', filters: 8, kernelSize: 3 }),
          tf.layers.globalAveragePooling2d({}),
          tf.layers.dense({ name: 'head', units: 10, activation: 'softmax' }),
        ],
      });
      const dir = path.join(tempDir(), 'model');
      await saveModel(model, dir);
      model.dispose();
      const out = path.join(tempDir(), 'out');
      const run = await cli(['compress', path.join(dir, 'model.json'), '--scheme', '2', '--layers', 'mix', '--rank', '2', '--data', imageSubset(FASHION_TRAIN, 2), '--iterations', '0', '--finetune', '--epochs', '1', '--out', out]);
      if (scale) {
        // With a scale the same model fine-tunes.
        assert.equal(run.code, 0, run.stderr);
        continue;
      }
      assert.equal(run.code, 1, run.stderr);
      assert.equal(errorLine(run), 'lowrank: --finetune: layer bn is a batch normalization without a scale (as in InceptionV3), and tfjs\' gradient fails on those; compress without --finetune');
      assert.ok(!fs.existsSync(out), 'nothing written');
    }
  });
});
