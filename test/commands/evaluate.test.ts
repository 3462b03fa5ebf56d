import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import sharp from 'sharp';
import * as tf from '@tensorflow/tfjs';
import { useBackend } from '../../src/runtime/backend.js';
import { decodeImage, type PixelOptions } from '../../src/data/images.js';
import { readModelMetadata } from '../../src/data/metadata.js';
import { UserError } from '../../src/errors.js';
import { loadModel } from '../../src/model/io.js';
import { CHARCNN, FASHION_TEST, cli, copyModel, errorLine, imageSubset, tempDir, type CliRun } from '../helpers.js';

before(async () => {
  await useBackend('wasm');
});

const CLASSES = fs.readdirSync(FASHION_TEST).sort();

/** The confusion matrix counted here without lowrank's image code: sharp → /255 → predict → argmax. */
async function independentConfusion(modelPath: string, root: string): Promise<number[][]> {
  const { model } = await loadModel(modelPath);
  const confusion = CLASSES.map(() => new Array<number>(CLASSES.length).fill(0));
  for (const [label, cls] of CLASSES.entries()) {
    const files = fs.readdirSync(path.join(root, cls)).sort();
    const pixels: number[] = [];
    for (const f of files) {
      const raw = await sharp(path.join(root, cls, f)).greyscale().raw().toBuffer();
      for (const v of raw) pixels.push(v / 255);
    }
    const predicted = tf.tidy(() => (model.predict(tf.tensor4d(pixels, [files.length, 24, 24, 1])) as tf.Tensor).argMax(1).dataSync());
    predicted.forEach((p) => confusion[label][p]++);
  }
  model.dispose();
  return confusion;
}

function json(run: CliRun): any {
  assert.equal(run.code, 0, run.stderr);
  return JSON.parse(run.stdout);
}

/** A small labelled folder: the first `perClass` test images of each class. */
const smallTestSet = (perClass: number): string => imageSubset(FASHION_TEST, perClass);

describe('evaluate', () => {
  test('top-1, per-class counts and the confusion matrix equal an independent count', async () => {
    // 30 images per class: 300, three whole batches of 96 and a partial one.
    const data = smallTestSet(30);
    const r = json(await cli(['evaluate', CHARCNN, '--data', data, '--batch', '96', '--json']));
    const expected = await independentConfusion(CHARCNN, data);
    assert.deepEqual(r.confusion, expected);
    const correct = expected.reduce((a, row, i) => a + row[i], 0);
    assert.equal(r.correct, correct);
    assert.equal(r.accuracy, correct / 300);
    assert.ok(r.accuracy > 0.85, `fixture accuracy ${r.accuracy}`);
    assert.deepEqual(r.images, { read: 300, skipped: 0, labeled: 300 });
    assert.deepEqual(r.classes, CLASSES);
    assert.equal(r.perClass.reduce((a: number, c: any) => a + c.images, 0), r.images.labeled);
    assert.equal(r.perClass.reduce((a: number, c: any) => a + c.correct, 0), r.correct);
    r.perClass.forEach((c: any, i: number) => assert.equal(c.correct, expected[i][i], c.name));
    assert.equal(r.predicted.reduce((a: number, p: any) => a + p.count, 0), 300);
    const top = r.topConfusions[0];
    const offDiagonal = expected.flatMap((row, t) => row.filter((_, p) => p !== t));
    assert.equal(top.count, Math.max(...offDiagonal));
    assert.equal(expected[CLASSES.indexOf(top.true)][CLASSES.indexOf(top.predicted)], top.count);
  });

  test('table output; unreadable files are counted; accuracy near chance gets a preprocessing hint', async () => {
    const data = smallTestSet(5);
    fs.writeFileSync(path.join(data, '0_tshirt_top', 'notes.txt'), 'not an image');
    const run = await cli(['evaluate', CHARCNN, '--data', data]);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /50 images \(1 skipped\), 10 classes, 10 outputs/);
    assert.match(run.stdout, /top-1 accuracy: \d+\.\d\d% \(\d+ of 50 labelled images\)/);
    assert.match(run.stdout, /^all\s+50\s+\d+\s+\d+\.\d\d%\s+50$/m);
    assert.match(run.stdout, /most frequent confusions \(true → predicted\): \S+ → \S+: \d+/);
    assert.match(run.stderr, /skipped 1 unreadable or non-image file \(notes\.txt\)/);
    assert.doesNotMatch(run.stderr, /near chance/);

    // All-zero pixels: every image gets the same class, 10 % on balanced classes.
    const blind = await cli(['evaluate', CHARCNN, '--data', data, '--scale', '0']);
    assert.equal(blind.code, 0, blind.stderr);
    assert.match(blind.stderr, /hint: top-1 10\.0% is near chance .*--scale/);
  });

  test('unlabelled images: the prediction distribution; a class count unlike the outputs is warned about', async () => {
    const flat = tempDir();
    for (const f of ['0000.png', '0001.png', '0002.png']) fs.copyFileSync(path.join(FASHION_TEST, '1_trouser', f), path.join(flat, f));
    const r = json(await cli(['evaluate', CHARCNN, '--data', flat, '--json']));
    assert.equal(r.accuracy, null);
    assert.deepEqual(r.images, { read: 3, skipped: 0, labeled: 0 });
    assert.equal(r.predicted.length, 10);
    assert.equal(r.predicted.reduce((a: number, p: any) => a + p.count, 0), 3);

    const three = tempDir();
    for (const cls of CLASSES.slice(0, 3)) fs.cpSync(path.join(FASHION_TEST, cls), path.join(three, cls), { recursive: true });
    const run = await cli(['evaluate', CHARCNN, '--data', three, '--json']);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stderr, /warning: 3 classes but the model has 10 outputs/);
  });
});

describe('--resize', () => {
  /** A non-square noise image, saved as PNG. */
  async function noiseImage(width: number, height: number, channels: 1 | 3): Promise<{ file: string; raw: Uint8Array }> {
    const raw = new Uint8Array(width * height * channels);
    let s = 12345;
    for (let i = 0; i < raw.length; i++) raw[i] = (s = (s * 1103515245 + 12345) >>> 0) >>> 24;
    const file = path.join(tempDir(), 'noise.png');
    await sharp(Buffer.from(raw), { raw: { width, height, channels } }).png().toFile(file);
    return { file, raw };
  }

  const pixels = (resize: PixelOptions['resize']): PixelOptions => ({ scale: 1 / 127, offset: -1, standardize: false, resize });

  for (const channels of [3, 1] as const) {
    test(`bilinear and nearest equal tfjs' resizeBilinear / resizeNearestNeighbor (${channels} channel${channels > 1 ? 's' : ''})`, async () => {
      const { file, raw } = await noiseImage(37, 23, channels);
      for (const to of [{ height: 16, width: 29 }, { height: 31, width: 20 }]) {
        const size = { ...to, channels };
        for (const method of ['bilinear', 'nearest'] as const) {
          const ours = await decodeImage(file, size, pixels(method));
          const theirs = tf.tidy(() => {
            const x = tf.tensor3d(raw, [23, 37, channels], 'int32');
            const y = method === 'bilinear' ? tf.image.resizeBilinear(x, [to.height, to.width]) : tf.image.resizeNearestNeighbor(x, [to.height, to.width]);
            return y.toFloat().div(127).sub(1).dataSync();
          });
          assert.ok(ours, 'decoded');
          assert.equal(ours.length, theirs.length);
          const diff = Math.max(...ours.map((v, i) => Math.abs(v - theirs[i])));
          assert.ok(diff < 1e-5, `${method} → ${to.height}×${to.width}: max |Δ| ${diff}`);
          // sharp's resampler is a different filter: the flag must make a difference.
          const sharpResized = (await decodeImage(file, size, pixels('sharp')))!;
          assert.ok(Math.max(...sharpResized.map((v, i) => Math.abs(v - theirs[i]))) > 0.05, `${method} differs from sharp's resize`);
        }
      }
    });
  }

  test('the flag reaches the image reader of every command, and rejects unknown methods', async () => {
    const data = smallTestSet(1);
    assert.equal(json(await cli(['evaluate', CHARCNN, '--data', data, '--resize', 'nearest', '--json'])).pixels.resize, 'nearest');
    const bad = await cli(['evaluate', CHARCNN, '--data', data, '--resize', 'bicubic']);
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /Allowed choices are sharp, bilinear, nearest/);
    const alone = await cli(['compress', CHARCNN, '--rank', '8', '--out', path.join(tempDir(), 'c'), '--resize', 'bilinear']);
    assert.equal(alone.code, 1);
    assert.match(errorLine(alone), /--resize applies to data reconstruction: give --data/);
  });
});

describe('Teachable Machine metadata.json', () => {
  const data = smallTestSet(10);
  const reversed = CLASSES.slice().reverse();
  const tmScale = String(1 / 127);

  function modelWithMetadata(content: string): string {
    const model = copyModel(CHARCNN);
    fs.writeFileSync(path.join(path.dirname(model), 'metadata.json'), content);
    return model;
  }

  test('its labels set the class order and its [-1, 1] pixels the preprocessing, unless flags say otherwise', async () => {
    const metadata = JSON.stringify({ tfjsVersion: '1.3.1', packageName: '@teachablemachine/image', labels: reversed, imageSize: 24 });
    const model = modelWithMetadata(metadata);
    const withMetadata = await cli(['evaluate', model, '--data', data, '--json']);
    const r = json(withMetadata);
    assert.match(withMetadata.stderr, /^lowrank: using labels and \[-1, 1\] pixels from metadata\.json beside the model$/m);
    assert.deepEqual(r.classes, reversed);
    assert.deepEqual(r.pixels, { scale: 1 / 127, offset: -1, standardize: false, resize: 'sharp' });

    // The same as giving those labels and pixels by hand to the model without metadata.json.
    const labels = path.join(tempDir(), 'labels.txt');
    fs.writeFileSync(labels, `${reversed.join('\n')}\n`);
    const byHand = json(await cli(['evaluate', CHARCNN, '--data', data, '--labels', labels, '--scale', tmScale, '--offset', '-1', '--json']));
    assert.deepEqual(r.confusion, byHand.confusion);
    const plain = json(await cli(['evaluate', CHARCNN, '--data', data, '--json']));
    assert.notDeepEqual(r.confusion, plain.confusion);

    // Explicit pixel flags win; labels still come from metadata.json.
    const scaled = await cli(['evaluate', model, '--data', data, '--scale', '0.00392156862745098', '--json']);
    assert.match(scaled.stderr, /^lowrank: using labels from metadata\.json beside the model$/m);
    const s = json(scaled);
    assert.deepEqual(s.classes, reversed);
    assert.equal(s.pixels.offset, 0);
    // Both given: metadata.json is not used, and nothing is said about it.
    const both = await cli(['evaluate', model, '--data', data, '--standardize', '--labels', labels, '--json']);
    assert.doesNotMatch(both.stderr, /metadata\.json/);
    assert.equal(json(both).pixels.standardize, true);
  });

  test('bench reads it too', async () => {
    const model = modelWithMetadata(JSON.stringify({ labels: reversed }));
    const run = await cli(['bench', model, model, '--data', data, '--batch', '2', '--runs', '1', '--warmup', '0', '--json']);
    const r = json(run);
    assert.match(run.stderr, /using labels and \[-1, 1\] pixels from metadata\.json/);
    const e = json(await cli(['evaluate', model, '--data', data, '--json']));
    assert.equal(r.before.accuracy, e.accuracy);
  });

  test('a broken one is a one-line error naming the file', async () => {
    for (const [content, message] of [
      ['{labels: oops', /metadata\.json: not valid JSON; fix it/],
      [JSON.stringify({ labels: 'a,b' }), /metadata\.json: "labels" is not a list of class names/],
      [JSON.stringify({ labels: [1, 2, 3] }), /metadata\.json: "labels" is not a list of class names/],
      [JSON.stringify({ imageSize: 224 }), /metadata\.json: "labels" is not a list of class names/],
      [JSON.stringify({ labels: ['a', 'b', 'a'] }), /metadata\.json: "labels" names a class twice/],
    ] as const) {
      assert.throws(() => readModelMetadata(modelWithMetadata(content)), (err: Error) => err instanceof UserError && message.test(err.message) && !err.message.includes('\n'), content);
    }
    const run = await cli(['evaluate', modelWithMetadata('not json'), '--data', data]);
    assert.equal(run.code, 1);
    assert.match(errorLine(run), /^lowrank: .*metadata\.json: not valid JSON; fix it/);
    assert.equal(run.stdout, '');
    assert.doesNotMatch(run.stderr, /^\s+at /m, 'no stack trace');
  });
});
