import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import sharp from 'sharp';
import * as tf from '@tensorflow/tfjs';
import { useBackend } from '../src/backend.js';
import { loadModel } from '../src/model/io.js';
import { CHARCNN, FASHION_TEST, RESIDUAL, errorLine, runCli, tempDir } from './helpers.js';

before(async () => {
  await useBackend('wasm');
});

/** Top-1 accuracy counted here without lowrank's image module: sharp → /255 → predict. */
async function independentAccuracy(modelPath: string, root: string): Promise<number> {
  const { model } = await loadModel(modelPath);
  const classes = fs.readdirSync(root).sort();
  let correct = 0;
  let total = 0;
  for (const [label, cls] of classes.entries()) {
    const files = fs.readdirSync(path.join(root, cls)).sort();
    const pixels: number[] = [];
    for (const f of files) {
      const raw = await sharp(path.join(root, cls, f)).greyscale().raw().toBuffer();
      for (const v of raw) pixels.push(v / 255);
    }
    const predictions = tf.tidy(() => (model.predict(tf.tensor4d(pixels, [files.length, 24, 24, 1])) as tf.Tensor).argMax(1).dataSync());
    predictions.forEach((p) => (correct += p === label ? 1 : 0));
    total += files.length;
  }
  return correct / total;
}

describe('bench', () => {
  test('a model against itself: full agreement, zero difference, speedup near 1; accuracy matches an independent count', async () => {
    const run = runCli(['bench', CHARCNN, path.dirname(CHARCNN), '--data', FASHION_TEST, '--batch', '1,8', '--runs', '6', '--warmup', '1', '--json']);
    assert.equal(run.code, 0, run.stderr);
    const r = JSON.parse(run.stdout);
    for (const key of ['backend', 'before', 'after', 'theoreticalSpeedup', 'batches', 'agreement', 'maxAbsDiff', 'meanAbsDiff', 'accuracyDelta']) assert.ok(key in r, key);
    assert.equal(r.agreement, 1);
    assert.equal(r.maxAbsDiff, 0);
    assert.equal(r.accuracyDelta, 0);
    assert.equal(r.theoreticalSpeedup, 1);
    assert.deepEqual(r.batches.map((b: any) => b.batch), [1, 8]);
    for (const b of r.batches) {
      assert.ok(b.speedup > 0.5 && b.speedup < 2, `speedup ${b.speedup} of a model against itself`);
      assert.ok(b.before.p10Ms <= b.before.medianMs && b.before.medianMs <= b.before.p90Ms);
    }
    assert.equal(r.before.bytes, fs.statSync(path.join(path.dirname(CHARCNN), 'group1-shard1of1.bin')).size);
    const expected = await independentAccuracy(CHARCNN, FASHION_TEST);
    assert.ok(Math.abs(r.before.accuracy - expected) < 1e-9, `bench says ${r.before.accuracy}, independent count ${expected}`);
    assert.ok(expected > 0.85, `fixture accuracy ${expected}`);
  });

  test('table output of a compressed model, with per-layer timing and random-input agreement', () => {
    const out = path.join(tempDir(), 'c');
    assert.equal(runCli(['compress', CHARCNN, '--rank', 'conv2=16,conv3=32', '--out', out]).code, 0);
    const run = runCli(['bench', CHARCNN, out, '--batch', '4', '--runs', '4', '--warmup', '1', '--per-layer']);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /theoretical speedup \(MACs\): \d+\.\d\d×/);
    assert.match(run.stdout, /agreement on 64 fixed-seed random inputs \(no --data\)/);
    assert.match(run.stdout, /conv2 .*conv2_v, conv2_h/);
  });

  test('bad input: models with different inputs', () => {
    const run = runCli(['bench', CHARCNN, RESIDUAL]);
    assert.notEqual(run.code, 0);
    assert.match(errorLine(run), /the models take different inputs/);
  });

  test('bad input: an unreadable model', () => {
    const dir = tempDir();
    fs.writeFileSync(path.join(dir, 'model.json'), 'not json');
    const run = runCli(['bench', CHARCNN, dir]);
    assert.notEqual(run.code, 0);
    assert.match(errorLine(run), /not valid JSON/);
  });
});
