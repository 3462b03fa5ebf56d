import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { useBackend } from '../../src/runtime/backend.js';
import { DEFAULT_PIXELS } from '../../src/data/images.js';
import { loadModel } from '../../src/model/io.js';
import { listLayers } from '../../src/model/layers.js';
import { formatRanks, rankCap, ranksForSpeedup, theoreticalSpeedup, type Replacement } from '../../src/plan/ranks.js';
import { fitToData, silentReporter, type ReconstructOptions } from '../../src/reconstruct/index.js';
import { scheme2, targetLayer } from '../../src/schemes/index.js';
import { CHARCNN, FASHION_TEST, FASHION_TRAIN, recordingReporter, runCli, tempDir } from '../helpers.js';
import { planCompression } from '../../src/plan/choose.js';
import { divergence, moveRanks, planByJointSearch } from '../../src/plan/joint-search.js';
import { loadImages, planImages } from '../../src/data/plan.js';
import { SEARCH_FITS } from '../../src/reconstruct/budget.js';

before(async () => {
  await useBackend('wasm');
});

async function charcnnCandidates() {
  const { model, topology } = await loadModel(CHARCNN);
  const layers = listLayers(model);
  const candidates: Replacement[] = ['conv2', 'conv3'].map((n) => ({ info: layers.find((l) => l.name === n)!, scheme: scheme2 }));
  model.dispose();
  return { layers, candidates, topology };
}

describe('moving rank between layers at a fixed target', () => {
  test('the paying layer gives at least the step, the gaining one takes all the target leaves', async () => {
    const { layers, candidates } = await charcnnCandidates();
    const [conv2, conv3] = candidates;
    for (const target of [8, 12]) {
      const start = ranksForSpeedup(layers, candidates, target)!.ranks;
      for (const [gain, pay, step] of [[conv3, conv2, 2], [conv2, conv3, 5], [conv3, conv2, 1]] as const) {
        const moved = moveRanks(layers, candidates, start, gain, pay, step, target);
        assert.ok(moved, `${target}×: ${pay.info.name} can pay ${step}`);
        const name = (c: Replacement) => c.info.name;
        assert.ok(theoreticalSpeedup(layers, candidates, moved) >= target, `${formatRanks(moved)} reaches ${target}×`);
        assert.ok(moved.get(name(pay))! <= start.get(name(pay))! - step);
        assert.ok(moved.get(name(gain))! > start.get(name(gain))!);
        if (moved.get(name(gain))! < rankCap(gain)) {
          const more = new Map(moved).set(name(gain), moved.get(name(gain))! + 1);
          assert.ok(theoreticalSpeedup(layers, candidates, more) < target, `${name(gain)} could take one rank more than ${formatRanks(moved)}`);
        }
      }
    }
  });

  test('no move when the paying layer would fall below rank 1 or the gaining one is at its cap', async () => {
    const { layers, candidates } = await charcnnCandidates();
    const [conv2, conv3] = candidates;
    assert.equal(moveRanks(layers, candidates, new Map([['conv2', 1], ['conv3', 30]]), conv3, conv2, 1, 2), null);
    assert.equal(moveRanks(layers, candidates, new Map([['conv2', 12], ['conv3', rankCap(conv3)]]), conv3, conv2, 1, 2), null);
  });
});

describe('divergence of outputs', () => {
  test('probabilities: the mean over images of KL(p‖q); zero for identical outputs', () => {
    const p = [[0.7, 0.2, 0.1], [0.25, 0.25, 0.5]];
    const q = [[0.6, 0.3, 0.1], [0.2, 0.4, 0.4]];
    const kl = (a: number[], b: number[]) => a.reduce((s, x, i) => s + x * Math.log(x / b[i]), 0);
    const expected = (kl(p[0], q[0]) + kl(p[1], q[1])) / 2;
    // Split over two batches, as the search feeds it.
    const got = divergence([tf.tensor2d([p[0]]), tf.tensor2d([p[1]])], [tf.tensor2d([q[0]]), tf.tensor2d([q[1]])], true);
    assert.ok(Math.abs(got - expected) < 1e-6, `${got} vs ${expected}`);
    assert.ok(Math.abs(divergence([tf.tensor2d(p)], [tf.tensor2d(p)], true)) < 1e-7);
  });

  test('other outputs: the relative error ‖f − f̂‖/‖f‖', () => {
    const f = [[3, -4], [0, 12]];
    const g = [[3, -3], [1, 12]];
    const got = divergence([tf.tensor2d(f)], [tf.tensor2d(g)], false);
    assert.ok(Math.abs(got - Math.sqrt(2 / 169)) < 1e-7);
  });
});

describe('ranks for a target by joint fits (compress --speedup --data)', () => {
  const FIT = 24;
  const options: ReconstructOptions = {
    // A few Adam steps: the search must fit as the run does, steps included (checked below).
    data: FASHION_TRAIN, evalData: FASHION_TEST, holdout: 0.2, samples: FIT, joint: true, iterations: 3, batch: 16, seed: 3, pixels: DEFAULT_PIXELS,
  };

  test('meets the target, never scores worse than equal fractions, and its score is the fitted model\'s divergence on fitting images it was not fitted on', async () => {
    const { model, topology } = await loadModel(CHARCNN);
    const images = planImages(options);
    images.holdout = images.holdout.slice(0, 1);
    const stores = await loadImages(model, images, options);
    const target = 8;
    const plan = planCompression(model, { scheme: '2', basis: 'per-channel', separable: false, layers: ['conv2', 'conv3'], speedup: target }, topology);
    const { phases, reporter } = recordingReporter();
    const search = await planByJointSearch({ model, topology }, plan, stores.fit, options, target, 'moves', reporter);
    // Each fit's own stages show inside the search's phase.
    const searchPhase = phases.find((p) => /joint fits/.test(p.label))!;
    for (let k = 1; k <= search.evaluated.length; k++) assert.ok(searchPhase.details.some((d) => d.startsWith(`fit ${k}: conv`)), `fit ${k}: ${searchPhase.details.slice(0, 3).join(' | ')}`);

    // conv3 (left as it is by the spectrum allocation) is a candidate of the search too.
    const candidates: Replacement[] = ['conv2', 'conv3'].map((name) => ({ info: plan.layers.find((l) => l.name === name)!, scheme: scheme2 }));
    const keys = search.evaluated.map((p) => formatRanks(p.ranks));
    assert.ok(search.evaluated.length <= SEARCH_FITS.moves);
    assert.equal(new Set(keys).size, keys.length, 'no allocation is fitted twice');
    assert.equal(keys[0], formatRanks(ranksForSpeedup(plan.layers, candidates, target)!.ranks), 'equal fractions are the first candidate');
    assert.equal(search.equal, search.evaluated[0]);
    assert.ok(search.evaluated.length > 1, 'it moved rank between the layers');
    for (const p of search.evaluated) {
      assert.ok(p.theoreticalSpeedup >= target && theoreticalSpeedup(plan.layers, candidates, p.ranks) >= target, `${formatRanks(p.ranks)} reaches ${target}×`);
      assert.ok(search.chosen.divergence <= p.divergence, `${formatRanks(p.ranks)} scored ${p.divergence} < chosen ${search.chosen.divergence}`);
    }
    assert.ok(search.chosen.divergence <= search.equal.divergence);
    assert.deepEqual(search.plan.ranked.map((r) => [r.info.name, r.rank]), [...search.chosen.ranks]);
    assert.equal(search.plan.allocation!.predictedError, search.chosen.divergence);
    assert.equal(search.plan.allocation!.baselineError, search.equal.divergence);

    // Independently: fit the chosen ranks as the run would (same steps) on the first fitting images,
    // score on the next ones.
    assert.equal(search.images.solve + search.images.score, FIT);
    assert.ok(search.images.score > 0 && search.images.solve > search.images.score);
    const start = search.plan.ranked.map(({ info }) => scheme2.factorize(targetLayer(info, topology), search.chosen.ranks.get(info.name)!));
    const fit = await fitToData({ model, topology }, start, stores.fit.head(search.images.solve), options, silentReporter);
    let kl = 0;
    let seen = 0;
    for await (const b of stores.fit.batches(search.images.solve)) {
      const n = Math.min(b.x.shape[0], search.images.score - seen);
      kl += tf.tidy(() => {
        const x = b.x.slice(0, n);
        const p = (model.predict(x) as tf.Tensor).reshape([n, -1]);
        const q = (fit.model.predict(x) as tf.Tensor).reshape([n, -1]);
        return p.mul(p.log().sub(q.log())).sum().dataSync()[0];
      });
      b.x.dispose();
      seen += n;
      if (seen === search.images.score) break;
    }
    assert.ok(Math.abs(kl / seen - search.chosen.divergence) < 1e-4 * Math.max(kl / seen, 1e-3), `independent ${kl / seen} vs ${search.chosen.divergence}`);
    fit.model.dispose();
    model.dispose();
  });

  test('compress --speedup --data writes the searched ranks and reports their score beside equal fractions', () => {
    const out = path.join(tempDir(), 'out');
    const run = runCli(['--backend', 'wasm', 'compress', CHARCNN, '--scheme', '2', '--layers', 'conv2,conv3', '--speedup', '8', '--out', out,
      '--data', FASHION_TRAIN, '--samples', String(FIT), '--iterations', '0', '--json']);
    assert.equal(run.code, 0, run.stderr);
    const m = /ranks for ≥ 8× chosen by joint fits of (\d+) allocations: (\S+) \(equal fractions: (\S+)\)/.exec(run.stderr);
    assert.ok(m, run.stderr);
    const report = JSON.parse(run.stdout);
    assert.equal(report.layers.map((l: { name: string; rank: number }) => `${l.name}=${l.rank}`).join(','), m[2]);
    assert.ok(report.theoreticalSpeedup >= 8);
    assert.equal(report.rankSelection.basis, 'measured');
    assert.ok(report.rankSelection.predictedError <= report.rankSelection.baselineError);
  });
});
