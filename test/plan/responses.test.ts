import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { useBackend } from '../../src/runtime/backend.js';
import { loadModel } from '../../src/model/io.js';
import { modelTopology } from '../../src/model/load.js';
import { listLayers } from '../../src/model/layers.js';
import { saveModel } from '../../src/model/save.js';
import { linearResponse } from '../../src/linalg/conv-ops.js';
import { chooseRanks, planCompression } from '../../src/plan/choose.js';
import { DEFAULT_PIXELS } from '../../src/data/images.js';
import { loadImages, planImages } from '../../src/data/plan.js';
import { silentReporter, type ReconstructOptions } from '../../src/reconstruct/index.js';
import { layerCosts, searchMode } from '../../src/reconstruct/budget.js';
import { responseSpectraApply } from '../../src/plan/responses.js';
import { makeTap } from '../../src/reconstruct/taps.js';
import { channel, targetLayer } from '../../src/schemes/index.js';
import { CHARCNN, FIXTURES, imageSubset, runCli, teachableModel, tempDir } from '../helpers.js';

before(async () => {
  await useBackend('wasm');
});

/** A 32×32×3 network of `count` 1×1 (or `kernelSize`) convs between a 3×3 stem and a Dense head: more layers than rank moves suit. */
function pointwiseStack(count: number, kernelSize = 1): tf.LayersModel {
  const init = (seed: number) => ({ kernelInitializer: tf.initializers.glorotNormal({ seed }), biasInitializer: tf.initializers.randomNormal({ seed: seed + 1, stddev: 0.1 }) });
  const layers: tf.layers.Layer[] = [tf.layers.conv2d({ inputShape: [32, 32, 3], name: 'stem', filters: 16, kernelSize: 3, strides: 2, padding: 'same', activation: 'relu', ...init(1) })];
  for (let i = 0; i < count; i++) layers.push(tf.layers.conv2d({ name: `pw${i}`, filters: 16, kernelSize, padding: 'same', activation: 'relu', ...init(10 + 2 * i) }));
  layers.push(tf.layers.globalAveragePooling2d({}), tf.layers.dense({ name: 'out', units: 10, activation: 'softmax', ...init(99) }));
  return tf.sequential({ layers });
}

describe('ranks from the layers\' response spectra', () => {
  // project: 24 → 12 (the N × N path); last_conv: 12 → 32 (the C × C one).
  for (const name of ['project', 'last_conv']) test(`${name}: the response curve is the error the channel scheme's closed-form data fit reaches at every rank`, async () => {
    const model = teachableModel(true);
    const info = listLayers(model).find((l) => l.name === name)!;
    const target = targetLayer(info, modelTopology(model));
    const { C, N } = target.geometry;
    const kernel = tf.tensor4d(target.kernel, [1, 1, C, N]);
    const tap = makeTap(model, [name], false);
    const batches = [1, 2, 3].map((seed) => tap(tf.randomUniform([16, 16, 16, 3], -1, 1, 'float32', seed)).inputs[0]);
    const spectrum = channel.responseSpectrum!(target);
    batches.forEach((x) => spectrum.add(x));
    const curve = spectrum.errorCurve();
    assert.equal(curve.length, Math.min(C, N) + 1);
    for (const rank of [1, 3, 7, 11, Math.min(C, N)]) {
      const fit = channel.factored(target, rank).closedForm!();
      batches.forEach((x) => tf.tidy(() => fit.add(x, linearResponse(x, kernel, target.geometry))));
      const solved = fit.solve(channel.factorize(target, rank).factors, true, 0);
      // ‖Y − Ŷ‖ / ‖Y − Ȳ‖ of the fitted pair of 1×1 convs (with its offset) on the same inputs.
      const [sse, centred] = tf.tidy(() => {
        const x = tf.concat(batches).reshape([-1, C]);
        const y = x.matMul(kernel.reshape([C, N]));
        const a = tf.tensor2d(solved.factors[0].values, [C, rank]);
        const b = tf.tensor2d(solved.factors[1].values, [rank, N]);
        const approx = x.matMul(a).matMul(b).add(tf.tensor1d(solved.offset!));
        return [y.sub(approx).square().sum().dataSync()[0], y.sub(y.mean(0)).square().sum().dataSync()[0]];
      });
      const reached = Math.sqrt(sse / centred);
      assert.ok(Math.abs(reached - curve[rank]) < 2e-3, `rank ${rank}: curve ${curve[rank].toFixed(5)}, fit ${reached.toFixed(5)}`);
    }
    tf.dispose([kernel, ...batches]);
    model.dispose();
  });

  test('they apply when every candidate has a closed-form fit (channel scheme), not beside kernel spectra', async () => {
    const teachable = teachableModel(true);
    assert.equal(responseSpectraApply(planCompression(teachable, { scheme: '2', basis: 'per-channel', separable: false, speedup: 2 }, modelTopology(teachable))), true);
    const { model, topology } = await loadModel(CHARCNN);
    assert.equal(responseSpectraApply(planCompression(model, { scheme: '2', basis: 'per-channel', separable: false, speedup: 4 }, topology)), false);
    teachable.dispose();
    model.dispose();
  });

  test('compress --speedup --data on more layers than rank moves suit: the joint search compares equal fractions with the response spectra\'s allocation', async () => {
    const dir = path.join(tempDir(), 'stack');
    const stack = pointwiseStack(13);
    await saveModel(stack, dir);
    stack.dispose();
    const images = imageSubset(path.join(FIXTURES, 'cifar10', 'train'), 2);
    const run = runCli(['--backend', 'wasm', 'compress', path.join(dir, 'model.json'), '--speedup', '2', '--data', images, '--scale', '1/255', '--out', path.join(tempDir(), 'out'), '--json']);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stderr, /rank search by joint fits: 13 layers are too many for moves of rank between pairs; it compares 3 allocations/);
    // The time estimate printed before the slow work counts the response spectra.
    assert.match(run.stderr, /estimated time: [^(]*\(rank search ~[\d.]+ (s|min), response spectra ~[\d.]+ (s|min), fit/);
    const responses = /ranks for ≥ 2× from the layers' response spectra on (\d+) fitting images: (\S+)/.exec(run.stderr);
    assert.ok(responses, run.stderr);
    const chosen = /ranks for ≥ 2× chosen by joint fits of (\d) allocations, (.+) the closest to the original: (\S+) \(equal fractions: (\S+)\)/.exec(run.stderr);
    assert.ok(chosen, run.stderr);
    const [, fits, which, ranks, equal] = chosen;
    assert.ok(Number(fits) >= 2 && Number(fits) <= 3, fits);
    // The allocation it names is the one written.
    const named = new Map([['equal fractions', equal], ['the spectra\'s', responses[2]]]);
    if (named.has(which)) assert.equal(ranks, named.get(which));
    else assert.equal(which, 'equal fractions over the layers the spectra keep');
    const report = JSON.parse(run.stdout);
    assert.equal(report.rankSelection.basis, 'measured');
    assert.ok(report.theoreticalSpeedup >= 2);
    assert.equal(report.layers.map((l: { name: string; rank: number }) => `${l.name}=${l.rank}`).join(','), ranks);
  });

  test('whole allocations are compared only where every layer is fitted in closed form; rank moves up to 12 layers', () => {
    const modeOf = (model: tf.LayersModel, layers: string[]) => {
      const topology = modelTopology(model);
      const plan = planCompression(model, { scheme: '2', basis: 'per-channel', separable: false, rank: 2, layers }, topology);
      assert.equal(plan.ranked.length, layers.length);
      return searchMode(layerCosts(plan.ranked, topology));
    };
    const pointwise = pointwiseStack(13);
    assert.equal(modeOf(pointwise, Array.from({ length: 13 }, (_, i) => `pw${i}`)), 'compare');
    assert.equal(modeOf(pointwise, Array.from({ length: 12 }, (_, i) => `pw${i}`)), 'moves');
    const spatial = pointwiseStack(13, 3);
    assert.match(String(modeOf(spatial, Array.from({ length: 13 }, (_, i) => `pw${i}`))), /^13 layers are too many for moves of rank between pairs, and not all are fitted in closed form/);
    pointwise.dispose();
    spatial.dispose();
  });

  test('with the joint search not affordable, --speedup --data takes the response spectra\'s allocation', async () => {
    const model = pointwiseStack(13);
    const topology = modelTopology(model);
    const options: ReconstructOptions = {
      data: imageSubset(path.join(FIXTURES, 'cifar10', 'train'), 2), holdout: 0.2, samples: 'auto', joint: true, iterations: 0, batch: 16, seed: 1,
      pixels: { ...DEFAULT_PIXELS, scale: 1 / 255 },
    };
    const images = planImages(options);
    const stores = await loadImages(model, images, options);
    const request = { scheme: '2', basis: 'per-channel', separable: false, speedup: 2 } as const;
    const base = planCompression(model, request, topology);
    const lines: string[] = [];
    const ctx = { source: { model, topology }, data: { stores, images, options, reporter: silentReporter }, table: null, probes: 0, labelled: false, log: (l: string) => lines.push(l), reporter: silentReporter };
    const skipped = await chooseRanks(base, request, { ...ctx, jointSearch: null });
    assert.equal(skipped.plan.allocation?.basis, 'responses');
    assert.ok(skipped.plan.allocation!.theoreticalSpeedup >= 2);
    assert.match(lines.join('\n'), /from the layers' response spectra on \d+ fitting images/);
    model.dispose();
  });
});
