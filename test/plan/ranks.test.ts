import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { useBackend } from '../../src/runtime/backend.js';
import { convGeometry } from '../../src/model/cost.js';
import { loadModel, modelTopology } from '../../src/model/io.js';
import { listLayers } from '../../src/model/layers.js';
import { allocateRanks, filterCandidates, maximumSpeedup, rankCap, ranksForSpeedup, summedLoss, theoreticalSpeedup } from '../../src/plan/ranks.js';
import { channel, filterError, scheme1, scheme2, selectSchemes, targetLayer, type Scheme } from '../../src/schemes/index.js';
import { interpolate, rankLadder } from '../../src/plan/sensitivity.js';
import { CHARCNN, NESTED, RESIDUAL } from '../helpers.js';
import { selectLayers } from '../../src/plan/select.js';

before(async () => {
  await useBackend('wasm');
});

const SCHEMES: [string, Scheme][] = [['scheme 2', scheme2], ['scheme 1', scheme1('per-channel', false)], ['scheme 1 shared', scheme1('shared', false)]];

describe('error curves: the filter error each rank costs, from the spectrum', () => {
  for (const [title, scheme] of SCHEMES) {
    test(`${title}: equals the filter error of the factorization it predicts (charcnn conv2, conv3)`, async () => {
      const { model, topology } = await loadModel(CHARCNN);
      for (const name of ['conv2', 'conv3']) {
        const target = targetLayer(listLayers(model).find((l) => l.name === name)!, topology);
        const curve = scheme.errorCurve(target);
        const full = scheme.fullRank(target.geometry);
        assert.equal(curve.length, full + 1);
        assert.ok(Math.abs(curve[0] - 1) < 1e-9, 'rank 0 loses everything');
        assert.ok(curve[full] < 1e-3, `full rank keeps everything (${curve[full]})`);
        // Near full rank only on conv2: conv3's would be a dense 1024×2048 SVD for the same end of the curve.
        for (const rank of [1, 2, Math.ceil(full / 3), ...(name === 'conv2' ? [full - 1] : [])]) {
          const actual = filterError(scheme.factorize(target, rank));
          assert.ok(Math.abs(actual - curve[rank]) < 2e-3 * Math.max(curve[rank], 0.05), `${name} rank ${rank}: factorization ${actual} vs curve ${curve[rank]}`);
        }
      }
    });
  }
});

describe('--speedup: ranks chosen for a whole-model target', () => {
  const fixtures: [string, string][] = [['charcnn', CHARCNN], ['residual', RESIDUAL], ['nested', NESTED]];
  for (const [name, fixture] of fixtures) {
    for (const [title, scheme] of SCHEMES.slice(0, 2)) {
      test(`${name}, ${title}: every reachable target is met exactly, with no more predicted loss than equal fractions`, async () => {
        const { model, topology } = await loadModel(fixture);
        const layers = listLayers(model);
        const names = layers.filter((l) => l.className === 'Conv2D' && scheme.refuses(l) === null && l.calls.length === 1).map((l) => l.name);
        const candidates = filterCandidates(names.map((n) => layers.find((l) => l.name === n)!), () => scheme, topology);
        const max = maximumSpeedup(layers, candidates).speedup;
        let checked = 0;
        // A fine grid of targets: the last rank step often overshoots, and only some targets leave room
        // for a cheaper layer to take a rank back.
        for (let target = 1.1; target < 20; target *= 1.07) {
          const allocation = allocateRanks(layers, candidates, target);
          if (target > max) {
            assert.equal(allocation, null, `${target}× is above the maximum ${max}`);
            continue;
          }
          assert.ok(allocation, `${target}× is reachable (max ${max})`);
          checked++;
          assert.ok(allocation.theoreticalSpeedup >= target, `${allocation.theoreticalSpeedup} < ${target}`);
          for (const c of candidates) {
            const r = allocation.ranks.get(c.info.name);
            if (rankCap(c) === 0) {
              assert.equal(r, undefined, `${c.info.name}: no rank saves the floor, so it is left as it is`);
              continue;
            }
            // Left as it is: replacing it did not pay at this target.
            if (r === undefined) continue;
            assert.ok(r >= 1 && r <= rankCap(c));
            if (r === rankCap(c)) continue;
            const more = new Map(allocation.ranks).set(c.info.name, r + 1);
            assert.ok(theoreticalSpeedup(layers, candidates, more) < target, `${c.info.name} could take rank ${r + 1} and still reach ${target}×`);
          }
          const equal = ranksForSpeedup(layers, candidates, target);
          const loss = summedLoss(candidates, allocation.ranks);
          if (equal) assert.ok(loss <= summedLoss(candidates, equal.ranks) + 1e-9, `${target}×: ${loss} > equal fractions ${summedLoss(candidates, equal.ranks)}`);
        }
        assert.ok(checked >= 2, 'at least two targets were reachable');
      });
    }
  }

  test('the maximum reachable speedup is every candidate at rank 1, and names what holds it back', async () => {
    const { model, topology } = await loadModel(CHARCNN);
    const layers = listLayers(model);
    const { chosen } = selectLayers(layers, selectSchemes({ scheme: '2', basis: 'per-channel', separable: false }), undefined, undefined);
    const candidates = filterCandidates(chosen, () => scheme2, topology);
    const max = maximumSpeedup(layers, candidates);
    const atOne = theoreticalSpeedup(layers, candidates, new Map(chosen.map((l) => [l.name, 1])));
    assert.equal(max.speedup, atOne);
    assert.match(max.heldBack, /first conv 2\.\d %/);
    assert.doesNotMatch(max.heldBack, / 0\.0 %/, 'no kind of layer that holds back nothing');
    const conv1 = layers.find((l) => l.name === 'conv1')!;
    assert.ok(scheme2.macs(convGeometry(conv1), 1) > 0);
  });
});

/**
 * Three 1×1 convs 64→64 in series on 8×8 positions with diagonal kernels: `flat` has 64 equal
 * singular values (a 1×1 conv's typical spectrum: rank r loses √(1 − r/64) of its filters),
 * `steep1` and `steep2` singular values 0.8^i (rank r loses 0.8^r).
 */
function flatAndSteepChain(): tf.LayersModel {
  const C = 64;
  const input = tf.input({ shape: [8, 8, C] });
  const specs: [string, (i: number) => number][] = [['flat', () => 1], ['steep1', (i) => 0.8 ** i], ['steep2', (i) => 0.8 ** i]];
  let h = input;
  const convs: [tf.layers.Layer, (i: number) => number][] = [];
  for (const [name, singular] of specs) {
    const conv = tf.layers.conv2d({ name, filters: C, kernelSize: 1, useBias: false });
    h = conv.apply(h) as tf.SymbolicTensor;
    convs.push([conv, singular]);
  }
  const model = tf.model({ inputs: input, outputs: h });
  for (const [conv, singular] of convs) {
    const w = new Float32Array(C * C);
    for (let i = 0; i < C; i++) w[i * C + i] = singular(i);
    conv.setWeights([tf.tensor4d(w, [1, 1, C, C])]);
  }
  return model;
}

describe('--speedup on layers in series: errors compound', () => {
  test('a layer with a flat spectrum is not wrecked to spare steep ones (no layer loses over 90 % of its filters)', () => {
    const model = flatAndSteepChain();
    const layers = listLayers(model);
    const candidates = filterCandidates(layers.filter((l) => l.className === 'Conv2D'), () => channel, modelTopology(model));
    for (const target of [2.5, 3]) {
      const allocation = allocateRanks(layers, candidates, target)!;
      assert.ok(allocation.theoreticalSpeedup >= target);
      const chosen = candidates.filter((c) => allocation.ranks.has(c.info.name)).map((c) => `${c.info.name}=${allocation.ranks.get(c.info.name)} (${c.error[allocation.ranks.get(c.info.name)!].toFixed(2)})`);
      // Minimising Σ e put flat at rank 8 (0.94) and 2 (0.98), both steep layers at 15 (0.04).
      for (const c of candidates) {
        const r = allocation.ranks.get(c.info.name);
        if (r !== undefined) assert.ok(c.error[r] <= 0.9, `${target}×: ${chosen.join(', ')}`);
      }
    }
    model.dispose();
  });
});

describe('measured sensitivity: rank ladder and interpolation', () => {
  test('the ladder runs from 1 to the cap, strictly increasing', () => {
    for (const cap of [1, 2, 5, 113, 432]) {
      const ladder = rankLadder(cap, 8);
      assert.equal(ladder[0], 1);
      assert.equal(ladder[ladder.length - 1], cap);
      for (let i = 1; i < ladder.length; i++) assert.ok(ladder[i] > ladder[i - 1]);
      assert.ok(ladder.length <= 8);
    }
  });
  test('interpolation passes through the measured points and is linear between them', () => {
    const curve = interpolate([{ rank: 1, error: 0.8 }, { rank: 5, error: 0.4 }, { rank: 9, error: 0.2 }], 12);
    assert.equal(curve[1], 0.8);
    assert.equal(curve[5], 0.4);
    assert.ok(Math.abs(curve[3] - 0.6) < 1e-12);
    assert.ok(Math.abs(curve[7] - 0.3) < 1e-12);
    assert.equal(curve[12], 0.2);
    assert.equal(curve[0], 0.8);
  });
});
