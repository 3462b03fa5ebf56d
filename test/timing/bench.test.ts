import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import sharp from 'sharp';
import * as tf from '@tensorflow/tfjs';
import { useBackend } from '../../src/runtime/backend.js';
import { loadModel } from '../../src/model/io.js';
import { listLayers } from '../../src/model/layers.js';
import { CHARCNN, FASHION_TEST, FASHION_TRAIN, NESTED, RESIDUAL, cli, errorLine, imageSubset, tempDir } from '../helpers.js';
import { MIN_RUNS } from '../../src/timing/loop.js';
import { NOISE_MARGIN, medianInterval } from '../../src/timing/stats.js';

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

/** The share of the images in `folders` that the model gives its commonest class, counted as independentAccuracy does. */
async function independentCommonest(modelPath: string, folders: string[]): Promise<number> {
  const { model } = await loadModel(modelPath);
  const counts = new Map<number, number>();
  let total = 0;
  for (const folder of folders) {
    const files = fs.readdirSync(folder).sort();
    const pixels: number[] = [];
    for (const f of files) for (const v of await sharp(path.join(folder, f)).greyscale().raw().toBuffer()) pixels.push(v / 255);
    const predictions = tf.tidy(() => (model.predict(tf.tensor4d(pixels, [files.length, 24, 24, 1])) as tf.Tensor).argMax(1).dataSync());
    predictions.forEach((p) => counts.set(p, (counts.get(p) ?? 0) + 1));
    total += files.length;
  }
  model.dispose();
  return Math.max(...counts.values()) / total;
}

describe('bench', () => {
  /** charcnn compressed once for every test that benches a compressed model (tests copy it before changing it). */
  let compressed: string;
  before(async () => {
    compressed = path.join(tempDir(), 'c');
    const made = await cli(['compress', CHARCNN, '--scheme', '2', '--rank', 'conv2=21,conv3=52', '--out', compressed]);
    assert.equal(made.code, 0, made.stderr);
  });

  test('a model against itself: full agreement, zero difference, speedup near 1; accuracy matches an independent count', async () => {
    // 20 images per class: enough to compare bench's accuracy with the independent count.
    const data = imageSubset(FASHION_TEST, 20);
    // --runs 3 is raised to MIN_RUNS; no batch 1, which adds the per-layer timing of the fixed overhead.
    const run = await cli(['bench', CHARCNN, path.dirname(CHARCNN), '--data', data, '--batch', '2,3', '--runs', '3', '--warmup', '1', '--json']);
    assert.equal(run.code, 0, run.stderr);
    const r = JSON.parse(run.stdout);
    for (const key of ['backend', 'before', 'after', 'theoreticalSpeedup', 'batches', 'agreement', 'maxAbsDiff', 'meanAbsDiff', 'accuracyDelta']) assert.ok(key in r, key);
    assert.equal(r.agreement, 1);
    assert.equal(r.maxAbsDiff, 0);
    assert.equal(r.accuracyDelta, 0);
    assert.equal(r.theoreticalSpeedup, 1);
    assert.deepEqual(r.batches.map((b: any) => b.batch), [2, 3]);
    for (const b of r.batches) {
      assert.ok(b.speedup > 0.5 && b.speedup < 2, `speedup ${b.speedup} of a model against itself`);
      assert.ok(b.speedupLow <= b.speedup && b.speedup <= b.speedupHigh, JSON.stringify(b));
      // Timing noise on a loaded machine can put the interval off 1×: check the verdict follows the interval.
      const reachesOne = b.speedupLow <= 1 + NOISE_MARGIN && b.speedupHigh >= 1 / (1 + NOISE_MARGIN);
      assert.equal(b.verdict, reachesOne ? 'within noise' : b.speedup < 1 ? 'slower' : 'faster', `batch ${b.batch}: ${b.speedupLow}–${b.speedupHigh}`);
      assert.ok(b.runs >= MIN_RUNS, `${b.runs} runs`);
      assert.ok(b.before.p10Ms <= b.before.medianMs && b.before.medianMs <= b.before.p90Ms);
    }
    assert.equal(r.before.bytes, fs.statSync(path.join(path.dirname(CHARCNN), 'group1-shard1of1.bin')).size);
    const expected = await independentAccuracy(CHARCNN, data);
    assert.ok(Math.abs(r.before.accuracy - expected) < 1e-9, `bench says ${r.before.accuracy}, independent count ${expected}`);
    assert.ok(expected > 0.85, `fixture accuracy ${expected}`);
  });

  test('agreement comes with the share of the original\'s commonest class; compress warns when that share leaves agreement saying little', async () => {
    // Unlabelled images (no class folders): agreement is all compress can score them by.
    const trousers = tempDir();
    fs.cpSync(path.join(FASHION_TEST, '1_trouser'), trousers, { recursive: true });
    const mixed = tempDir();
    for (const cls of fs.readdirSync(FASHION_TEST)) {
      for (const f of fs.readdirSync(path.join(FASHION_TEST, cls)).sort().slice(0, 3)) fs.copyFileSync(path.join(FASHION_TEST, cls, f), path.join(mixed, `${cls}-${f}`));
    }
    const oneClass = await independentCommonest(CHARCNN, [trousers]);
    const everyClass = await independentCommonest(CHARCNN, [mixed]);
    assert.ok(oneClass >= 0.9 && everyClass < 0.5, `the fixture's shares: ${oneClass}, ${everyClass}`);

    const benched = await cli(['bench', CHARCNN, compressed, '--data', trousers, '--batch', '2', '--runs', '3', '--warmup', '0', '--json']);
    assert.equal(benched.code, 0, benched.stderr);
    assert.ok(Math.abs(JSON.parse(benched.stdout).commonest - oneClass) < 1e-9);

    const fit = tempDir();
    fs.cpSync(path.join(FASHION_TRAIN, '3_dress'), fit, { recursive: true });
    for (const [evalData, share] of [[trousers, oneClass], [mixed, everyClass]] as const) {
      const run = await cli(['compress', CHARCNN, '--layers', 'conv3', '--rank', '40', '--iterations', '0', '--data', fit, '--eval-data', evalData, '--out', path.join(tempDir(), 'o'), '--json']);
      assert.equal(run.code, 0, run.stderr);
      const report = JSON.parse(run.stdout);
      const agreement = report.dataReconstruction.agreement;
      assert.ok(Math.abs(agreement.commonest - share) < 1e-9, `${agreement.commonest} vs ${share}`);
      const warned = (report.warnings ?? []).some((w: string) => /gives one class to .* says little about the other classes/.test(w));
      assert.equal(warned, share >= 0.9 && agreement.data >= 0.9, JSON.stringify({ agreement, warnings: report.warnings }));
    }
  });

  test('table output of a compressed model, with per-layer timing and random-input agreement', async () => {
    const run = await cli(['bench', CHARCNN, compressed, '--batch', '2', '--runs', '4', '--warmup', '1', '--per-layer']);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /theoretical speedup \(MACs\): \d+\.\d\d×/);
    assert.match(run.stdout, /agreement on 64 fixed-seed random inputs \(no --data\)/);
    assert.match(run.stdout, /conv2 .*conv2_v, conv2_h/);
    assert.doesNotMatch(run.stdout, /conv2 .*same layer/);
    // An untouched layer makes no speedup claim, whatever its times read.
    assert.match(run.stdout, /\nconv1 .*— \(same layer\)\s+conv1\n/);
  });

  test('a model against itself with --runs 3: runs raised, and a batch within noise flagged as no measurable difference', async () => {
    const run = await cli(['bench', CHARCNN, path.dirname(CHARCNN), '--batch', '2,3', '--runs', '3', '--warmup', '1']);
    assert.equal(run.code, 0, run.stderr);
    for (const batch of [2, 3]) {
      const row = run.stdout.split('\n').find((l) => new RegExp(`^\\s+${batch}  `).test(l))!;
      const runs = Number(/→ \d+\s+(\d+)\s/.exec(row)![1]);
      assert.ok(runs >= MIN_RUNS, row);
      // Whether the interval reaches 1× depends on the machine's load; the flag must follow it.
      const flagged = new RegExp(`batch ${batch}: no measurable difference`).test(run.stdout);
      if (/\(within noise\)/.test(row)) {
        assert.match(row, /\(within noise\) \[\d+\.\d\d–\d+\.\d\d×\]/, row);
        assert.ok(flagged, row);
      } else {
        assert.ok(!flagged, row);
      }
    }
  });

  test('a slowdown is labelled as one', async () => {
    // The compressed model first: the "after" model is the slow original.
    const run = await cli(['bench', compressed, CHARCNN, '--batch', '2', '--runs', '3', '--warmup', '1']);
    assert.equal(run.code, 0, run.stderr);
    const row = run.stdout.split('\n').find((l) => /^\s+2  /.test(l))!;
    assert.match(row, /0\.\d\d× \(slower\) \[0\.\d\d–0\.\d\d×\]/, row);
  });

  test('the 95% interval of the median takes the order statistics the binomial tail gives', () => {
    for (const n of [1, 5, 6, 10, 17, 40, 101]) {
      const values = Array.from({ length: n }, (_, i) => ((i * 7919) % 101) + i / 1000);
      const sorted = [...values].sort((a, b) => a - b);
      // Largest k with P(Binomial(n, 1/2) ≤ k − 1) ≤ 2.5 %, counted exactly with big integers.
      let k = 1;
      let coefficient = 1n;
      let cumulative = 1n; // Σ_{j<k} C(n, j)
      const total = 2n ** BigInt(n);
      for (let j = 1; j < n / 2; j++) {
        coefficient = (coefficient * BigInt(n - j + 1)) / BigInt(j);
        if ((cumulative + coefficient) * 40n > total) break;
        cumulative += coefficient;
        k = j + 1;
      }
      if (cumulative * 40n > total) k = 1;
      assert.deepEqual(medianInterval(values), [sorted[k - 1], sorted[n - k]], `n = ${n}`);
    }
  });

  /** A copy of `compressed` whose replacement layers (topology, weights and record) carry names no suffix rule knows. */
  const renamed = () => {
    const out = path.join(tempDir(), 'renamed');
    fs.cpSync(compressed, out, { recursive: true });
    const jsonPath = path.join(out, 'model.json');
    fs.writeFileSync(jsonPath, fs.readFileSync(jsonPath, 'utf8').replaceAll('conv2_v', 'reduce_a').replaceAll('conv2_h', 'expand_b'));
    return out;
  };

  /** How far apart the per-layer rows' sum and the separately timed model may be, either way. */
  const SUM_FACTOR = 3;

  // residual at batches 1 and 2: per-layer timing at the largest batch plus the batch-1 overhead
  // timing; the others (charcnn's runs are the slow ones) at batch 1 alone, where one per-layer
  // timing serves both.
  for (const [title, before, makeAfter, batches] of [
    ['charcnn against its compression, replacement layers renamed', CHARCNN, renamed, '1'],
    ['residual (branches) against itself', RESIDUAL, () => path.dirname(RESIDUAL), '1,2'],
    ['nested against itself', NESTED, () => path.dirname(NESTED), '1'],
  ] as const) {
    test(`per-layer times inside the model runs add up to the whole model timed alone: ${title}`, async () => {
      const run = await cli(['bench', before, makeAfter(), '--batch', batches, '--runs', '3', '--warmup', '1', '--per-layer', '--json']);
      assert.equal(run.code, 0, run.stderr);
      const r = JSON.parse(run.stdout);
      const p = r.perLayer;
      const { model } = await loadModel(before);
      const convs = listLayers(model).filter((l) => l.className === 'Conv2D');
      assert.deepEqual(p.blocks.map((b: any) => b.name), convs.map((l) => l.name));
      assert.equal(p.batch, Number(batches.split(',').pop()), 'timed at the largest batch');
      // The rows (each block's clocked time, plus the rest of the same runs) against the whole model
      // timed on its own in the speed table at the same batch, without the per-layer clocks. Not a
      // speed target: the factor is loose so that a loaded machine passes, while a per-layer time
      // off by a whole factor (a sum over runs for a mean, another batch) does not.
      const alone = { beforeMs: p.modelBeforeMs, afterMs: p.modelAfterMs };
      for (const side of ['beforeMs', 'afterMs'] as const) {
        const rows = p.blocks.reduce((s: number, b: any) => s + b[side], p.other[side]);
        const ratio = rows / alone[side];
        assert.ok(ratio > 1 / SUM_FACTOR && ratio < SUM_FACTOR, `${side}: the rows sum to ${rows} ms, the whole model timed alone takes ${alone[side]} ms`);
        assert.ok(p.other[side] >= 0 && p.blocks.every((b: any) => b[side] > 0), JSON.stringify(p));
      }
      // Every layer call counted once, nested ones included.
      assert.equal(r.overheadAtBatch1.before.layers, listLayers(model).length);
      for (const o of [r.overheadAtBatch1.before, r.overheadAtBatch1.after]) assert.ok(o.fixedMs > 0 && o.fixedMs <= o.modelMs, JSON.stringify(o));
      if (before === CHARCNN) {
        // The blocks follow the output's record of what replaced what, not name suffixes.
        assert.deepEqual(p.blocks.find((b: any) => b.name === 'conv2').afterLayers, ['reduce_a', 'expand_b']);
        assert.equal(r.overheadAtBatch1.after.layers, 8);
      }
    });
  }

  test('bad input: models with different inputs', async () => {
    const run = await cli(['bench', CHARCNN, RESIDUAL]);
    assert.notEqual(run.code, 0);
    assert.match(errorLine(run), /the models take different inputs/);
  });

  test('bad input: an unreadable model', async () => {
    const dir = tempDir();
    fs.writeFileSync(path.join(dir, 'model.json'), 'not json');
    const run = await cli(['bench', CHARCNN, dir]);
    assert.notEqual(run.code, 0);
    assert.match(errorLine(run), /not valid JSON/);
  });
});
