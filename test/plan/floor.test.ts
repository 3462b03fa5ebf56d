/**
 * Rank choices that never hurt: a layer whose replacement can save only a sliver of its MACs is
 * left as it is by every allocator, allocations may leave layers alone where replacing them does
 * not pay, and the report warns on ranks that damage the model.
 */
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { useBackend } from '../../src/runtime/backend.js';
import { factorize, type CompressPlan } from '../../src/plan/plan.js';
import { convGeometry, layerMacs } from '../../src/model/cost.js';
import { measureTimeTable, measuredReach, planByMeasuredTime, spectrumCandidates } from '../../src/plan/measured.js';
import { loadModel, modelTopology } from '../../src/model/io.js';
import { listLayers } from '../../src/model/layers.js';
import { MIN_LAYER_SAVING, allocateRanks, filterCandidates, maximumSpeedup, rankCap, ranksForSpeedup, summedError } from '../../src/plan/ranks.js';
import { silentReporter } from '../../src/reconstruct/index.js';
import { scheme2 } from '../../src/schemes/index.js';
import { planForTarget, rankLadder, type Sensitivity } from '../../src/plan/sensitivity.js';
import * as path from 'node:path';
import { renderReach } from '../../src/cli/inspect.js';
import { speedupReach } from '../../src/commands/inspect.js';
import { CHARCNN, cli, tempDir } from '../helpers.js';
import { damageWarnings, heldOutWarning, layerResults } from '../../src/report/results.js';
import { planCompression } from '../../src/plan/choose.js';

before(async () => {
  await useBackend('wasm');
});

/**
 * `sliver`, a 2×2 conv 2→2 with horizontal stride 3: its vertical factor runs over the full input
 * width, so even rank 1 costs 97.7 % of its MACs. `big`, a 3×3 conv 2→32, saves most of its MACs.
 */
function sliverModel(): tf.LayersModel {
  const init = (seed: number) => ({ kernelInitializer: tf.initializers.glorotNormal({ seed }) });
  const input = tf.input({ shape: [9, 32, 2] });
  let h = tf.layers.conv2d({ name: 'sliver', filters: 2, kernelSize: 2, strides: [1, 3], activation: 'relu', ...init(1) }).apply(input) as tf.SymbolicTensor;
  h = tf.layers.conv2d({ name: 'big', filters: 32, kernelSize: 3, padding: 'same', activation: 'relu', ...init(2) }).apply(h) as tf.SymbolicTensor;
  h = tf.layers.flatten().apply(h) as tf.SymbolicTensor;
  h = tf.layers.dense({ name: 'out', units: 4, activation: 'softmax', ...init(3) }).apply(h) as tf.SymbolicTensor;
  return tf.model({ inputs: input, outputs: h });
}

const SCHEME = { scheme: '2', basis: 'per-channel', separable: false } as const;
const LAYERS = ['sliver', 'big'];

describe('a layer whose replacement saves only ~2 % of its MACs is left as it is', () => {
  const model = sliverModel();
  const topology = modelTopology(model);
  const layers = listLayers(model);
  const sliver = layers.find((l) => l.name === 'sliver')!;
  const candidates = filterCandidates(LAYERS.map((n) => layers.find((l) => l.name === n)!), () => scheme2, topology);
  const leftAlone = (plan: CompressPlan) => {
    assert.ok(!plan.ranked.some((r) => r.info.name === 'sliver'), `sliver is replaced: ${plan.ranked.map((r) => `${r.info.name}=${r.rank}`)}`);
    const why = plan.skipped.find((s) => s.name === 'sliver');
    assert.ok(why, 'the report says sliver was left as it is');
    return why.reason;
  };

  test('the fixture: rank 1 saves between 0 and the floor', () => {
    const saving = 1 - scheme2.macs(convGeometry(sliver), 1) / layerMacs(sliver)!;
    assert.ok(saving > 0.01 && saving < 0.03, `rank 1 saves ${saving}`);
    assert.ok(saving < MIN_LAYER_SAVING);
    assert.equal(rankCap({ info: sliver, scheme: scheme2 }), 0);
  });

  test('spectrum allocation, equal fractions and the maximum speedup', () => {
    for (const target of [1.2, 1.5, 2]) {
      const allocation = allocateRanks(layers, candidates, target);
      assert.ok(allocation, `${target}× is reachable with big alone`);
      assert.ok(!allocation.ranks.has('sliver'), `${target}×: sliver at rank ${allocation.ranks.get('sliver')}`);
      assert.ok(allocation.theoreticalSpeedup >= target);
      assert.ok(!ranksForSpeedup(layers, candidates, target)!.ranks.has('sliver'));
    }
    const withBigAtOne = maximumSpeedup(layers, candidates).speedup;
    assert.equal(withBigAtOne, maximumSpeedup(layers, candidates.filter((c) => c.info.name === 'big')).speedup);
  });

  test('compress --speedup (spectrum, and the layers the joint search with --data may replace)', () => {
    const plan = planCompression(model, { ...SCHEME, speedup: 1.5, layers: LAYERS }, topology);
    assert.match(leftAlone(plan), /saves only 2\.\d % of its MACs, under the 10 %/);
    // The joint search reconsiders only layers left by choice, never those under the floor.
    assert.ok(!plan.skipped.find((s) => s.name === 'sliver')!.byChoice);
  });

  test('compress --max-loss: the sensitivity allocation of every probe', () => {
    const base = planCompression(model, { ...SCHEME, maxLoss: 1, layers: LAYERS }, topology);
    leftAlone(base);
    // The search's per-probe allocation, fed every layer (as if the base plan had kept sliver):
    // measured errors here are the filter errors at the ladder's ranks.
    const withSliver: CompressPlan = { ...base, ranked: candidates.map((c) => ({ info: c.info, scheme: c.scheme, rank: 1, slower: false })), skipped: [] };
    const sensitivity: Sensitivity = {
      layers: candidates.map((c) => ({ name: c.info.name, points: rankLadder(Math.max(1, rankCap(c)), 8).map((rank) => ({ rank, error: c.error[rank] })) })),
      images: 0,
      seconds: 0,
    };
    for (const target of [1.2, 2]) assert.match(leftAlone(planForTarget(withSliver, sensitivity, target)), /does not pay/);
  });

  test('compress --speedup --measured: the time table and its allocation', async () => {
    const plan = planCompression(model, { ...SCHEME, speedup: 1.1, measured: true, layers: LAYERS }, topology);
    leftAlone(plan);
    const table = await measureTimeTable({ model, topology }, plan, 1, silentReporter);
    assert.deepEqual(table.layers.map((l) => l.name), ['big']);
    // A target the timings allow (a model this small may time no faster at all).
    const choice = planByMeasuredTime(plan, table, spectrumCandidates(plan, topology), 0.9 * measuredReach(table).maximum);
    leftAlone(choice.plan);
  });

  test('--rank naming the layer still replaces it', () => {
    const plan = planCompression(model, { ...SCHEME, rank: new Map([['sliver', 1], ['big', 2]]) }, topology);
    assert.deepEqual(plan.ranked.map((r) => r.info.name), LAYERS);
  });
});

describe('charcnn --speedup: the same ranks or better than before layers could be left alone', () => {
  // The ranks the allocator chose when it replaced every selected layer (conv3 always at 113 of
  // 1024, saving 1 % of its MACs at 40 % filter error).
  const previous: [number, Record<string, number>][] = [
    [1.5, { conv2: 159, conv3: 113 }], [2, { conv2: 115, conv3: 113 }], [3, { conv2: 71, conv3: 113 }], [4, { conv2: 49, conv3: 113 }], [8, { conv2: 17, conv3: 113 }],
  ];
  for (const [target, ranks] of previous) {
    test(`${target}×: conv3 left as it is, conv2 at the same rank or one less, less summed filter error`, async () => {
      const { model, topology } = await loadModel(CHARCNN);
      const plan = planCompression(model, { ...SCHEME, speedup: target }, topology);
      const candidates = filterCandidates(plan.layers.filter((l) => ['conv2', 'conv3'].includes(l.name)), () => scheme2, topology);
      const a = plan.allocation!;
      assert.ok(a.theoreticalSpeedup >= target);
      assert.ok(!a.ranks.has('conv3'));
      assert.ok(plan.skipped.some((s) => s.name === 'conv3' && s.byChoice));
      assert.ok(a.ranks.get('conv2')! >= ranks.conv2 - 1 && a.ranks.get('conv2')! <= ranks.conv2 + 1, `conv2 ${a.ranks.get('conv2')} vs ${ranks.conv2}`);
      assert.ok(a.predictedError < summedError(candidates, new Map(Object.entries(ranks))), `${a.predictedError} vs before`);
      model.dispose();
    });
  }
});

describe('warnings on damage', () => {
  test('tiny ranks and a large filter error warn, saying what to do with and without data', async () => {
    const { model, topology } = await loadModel(CHARCNN);
    const plan = planCompression(model, { ...SCHEME, speedup: 8 }, topology);
    const results = layerResults(plan, factorize(plan, topology));
    const conv2 = results.find((r) => r.name === 'conv2')!;
    assert.ok(conv2.rank < 0.05 * conv2.fullRank, `8× puts conv2 at ${conv2.rank} of ${conv2.fullRank}`);
    const without = damageWarnings(results, false).join('\n');
    assert.match(without, /1 layer at a tiny rank .*conv2 \d+\/432; at this speedup data reconstruction is needed/);
    assert.match(without, /lose \d+ % of their filters on average/);
    assert.match(damageWarnings(results, true).join('\n'), /check the held-out agreement/);
    const mild = planCompression(model, { ...SCHEME, speedup: 1.5 }, topology);
    assert.deepEqual(damageWarnings(layerResults(mild, factorize(mild, topology)), false), []);
    model.dispose();
  });

  test('held-out agreement under 90 % is said plainly', () => {
    assert.equal(heldOutWarning(0.95, 100, null), null);
    assert.match(heldOutWarning(0.62, 100, { original: 0.9, data: 0.6 })!, /agrees with the original's top-1 on only 62\.0 % of 100 held-out images; top-1 accuracy 90\.0 % → 60\.0 %/);
  });
});

describe('inspect on a model with many layers', () => {
  /** Thirty 3×3 convs with long names: a reach table with a column per layer would be far wider than a terminal. */
  function deepModel(): tf.LayersModel {
    const input = tf.input({ shape: [12, 12, 8] });
    let h = input;
    for (let i = 0; i < 30; i++) {
      h = tf.layers.conv2d({ name: `block_${i}_expand_conv`, filters: 8, kernelSize: 3, padding: 'same', kernelInitializer: tf.initializers.glorotNormal({ seed: i }) }).apply(h) as tf.SymbolicTensor;
    }
    return tf.model({ inputs: input, outputs: h });
  }

  test('the reach table lists layers as rows, no line over 160 characters', () => {
    const model = deepModel();
    const reach = speedupReach(listLayers(model), modelTopology(model))!;
    assert.equal(reach.layers.length, 29, 'all but the first conv');
    const text = renderReach(reach).replace(/\x1b\[[0-9;]*m/g, '');
    const lines = text.split('\n');
    const widest = Math.max(...lines.map((l) => [...l].length));
    assert.ok(widest <= 160, `widest line ${widest}`);
    assert.ok(lines.some((l) => l.startsWith('block_17_expand_conv ')), 'a row per layer');
    assert.match(text, /Replacing the 29 layers compress picks by default/);
    model.dispose();
  });

  test('--timing times what replacing the default layers saves on this backend', async () => {
    const run = await cli(['inspect', CHARCNN, '--timing', '--json']);
    assert.equal(run.code, 0, run.stderr);
    const { timing, reach } = JSON.parse(run.stdout);
    assert.equal(timing.batch, 1);
    assert.deepEqual(timing.layers.map((l: { name: string }) => l.name), reach.layers);
    for (const l of timing.layers) assert.ok(l.originalMs > 0 && l.fastestMs > 0 && l.fastestRank >= 1, JSON.stringify(l));
    // Measured time can round a hair past the MAC ceiling when the replaced layers hold nearly all of it.
    assert.ok(timing.measuredMaximum > 0 && timing.measuredMaximum < timing.macMaximum * 1.05, `${timing.measuredMaximum} measured vs ${timing.macMaximum} by MACs`);
    const text = await cli(['inspect', CHARCNN]);
    assert.doesNotMatch(text.stdout, /Time on/, 'no timing unless asked');
  });

  test('compress --speedup times the result beside its MAC speedup', async () => {
    const run = await cli(['compress', CHARCNN, '--speedup', '2', '--out', path.join(tempDir(), 'o'), '--json']);
    assert.equal(run.code, 0, run.stderr);
    const report = JSON.parse(run.stdout);
    assert.equal(report.quickTiming.batch, 1);
    assert.ok(report.quickTiming.runs >= 10 && report.quickTiming.speedup > 0);
    assert.deepEqual(report.skipped.map((s: { name: string }) => s.name), ['conv3']);
  });
});
