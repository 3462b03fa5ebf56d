/**
 * The wasm heap plan of data reconstruction: a run whose exact solve would not fit in the backend's
 * heap is refused before any slow work, naming a --batch that fits, and writes nothing.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { useBackend } from '../../src/runtime/backend.js';
import { saveModel } from '../../src/model/io.js';
import { loadModel } from '../../src/model/load.js';
import { measureStep } from '../../src/train/finetune.js';
import { FASHION_TRAIN, errorLine, imageSubset, runCli, tempDir } from '../helpers.js';

const dirs: string[] = [];
after(() => dirs.forEach((d) => fs.rmSync(d, { recursive: true, force: true })));

before(async () => {
  await useBackend('wasm');
});

/**
 * `size`×`size` images widened to 64 channels by a 1×1 conv, then a 3×3 conv to 8. At 512: one
 * image's exact solve of the 3×3 conv takes ~130 MB of the heap (its 16.8 M input values and the
 * design matrix), so the default 32 images a batch would need ~4 GB.
 */
async function wideModel(size = 512): Promise<string> {
  const model = tf.sequential({
    layers: [
      tf.layers.conv2d({ name: 'widen', inputShape: [size, size, 3], filters: 64, kernelSize: 1, activation: 'relu' }),
      tf.layers.conv2d({ name: 'wide3x3', filters: 8, kernelSize: 3, padding: 'same', activation: 'relu' }),
      tf.layers.globalAveragePooling2d({}),
      tf.layers.dense({ name: 'head', units: 10, activation: 'softmax' }),
    ],
  });
  const dir = tempDir();
  dirs.push(dir);
  await saveModel(model, path.join(dir, 'model'));
  model.dispose();
  return path.join(dir, 'model');
}

test('a data fit whose solve batch does not fit the wasm heap is refused up front with a --batch that fits', async () => {
  const model = await wideModel();
  const images = imageSubset(FASHION_TRAIN, 4);
  dirs.push(images);
  const out = path.join(path.dirname(model), 'out');
  const run = runCli(['compress', model, '--layers', 'wide3x3', '--rank', '4', '--data', images, '--iterations', '0', '--out', out]);
  assert.equal(run.code, 1, run.stderr);
  assert.match(errorLine(run), /--batch 32: data reconstruction would need ~[\d.]+ GB of the wasm backend's heap, more than the 3\.0 GB it can safely use \(it holds 4\.0 GB at most and never shrinks\) \(layer wide3x3 at 32 images a batch\); give --batch 16 or less/);
  assert.doesNotMatch(run.stderr, /^\s+at /m, 'no stack trace');
  assert.equal(fs.existsSync(out), false, 'nothing written');
  // What it names fits: the plan accepts that batch (the run itself is not repeated here: minutes of 512-px convolutions).
});

test('fine-tuning whose training step does not fit the wasm heap is refused up front with a --batch that fits', async () => {
  // A step on one image holds ~145 MB at 320 px: 32 images a step would not fit.
  const model = await wideModel(320);
  const images = imageSubset(FASHION_TRAIN, 4);
  dirs.push(images);
  const out = path.join(path.dirname(model), 'out');
  const run = runCli(['compress', model, '--layers', 'wide3x3', '--rank', '4', '--data', images, '--iterations', '0', '--finetune', '--out', out]);
  assert.equal(run.code, 1, run.stderr);
  const refused = errorLine(run).match(/^lowrank: --finetune: a training step of 32 images would hold ~([\d.]+) GB of the wasm backend's heap \(measured on a step of one image: (\d+) MB an image, kept for the backward pass\), more than the 3\.0 GB it can safely use; give --batch (\d+) or less \(fine-tuning steps take --batch images\)$/);
  assert.ok(refused, errorLine(run));
  // The figure it plans with is a step's growth on one image, and a step's growth is linear in its
  // images (what the plan extrapolates): two images take twice one's.
  const { model: loaded } = await loadModel(path.join(model, 'model.json'));
  const grown = async (images: number) => {
    const step = await measureStep(loaded, ['wide3x3'], images);
    return (step.peak - step.resident) / 1024 ** 2;
  };
  const one = await grown(1);
  const two = await grown(2);
  loaded.dispose();
  assert.ok(Math.abs(Number(refused[2]) - one) <= 1, `the refusal plans with ${refused[2]} MB an image; a step of one image grows ${one.toFixed(0)} MB`);
  assert.ok(two >= 1.9 * one && two <= 2.05 * one, `one image ${one.toFixed(0)} MB, two ${two.toFixed(0)} MB`);
  // The batch it names is the largest halving of 32 whose images fit in 3 GB.
  const named = Number(refused[3]);
  assert.ok(named * one <= 3 * 1024 && 2 * named * one > 3 * 1024 - 64, `--batch ${named} at ${one.toFixed(0)} MB an image`);
  assert.equal(fs.existsSync(out), false, 'nothing written');
});
