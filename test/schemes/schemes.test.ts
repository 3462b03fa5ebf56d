/**
 * Every registered scheme variant, checked against what it actually builds: the MACs and
 * parameters it reports against the cost model's count of the stock layers it wrote, on every
 * fixture, and its filter error against an independent SVD optimum. Then every scheme the registry
 * holds — a test-only one registered here included (identity-scheme.ts) — against the full op: at
 * full rank the compressed model computes what the original does, its factored forward pass
 * equals the layers it writes, and compress runs it end to end.
 */
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { Matrix, SVD } from 'ml-matrix';
import { useBackend } from '../../src/runtime/backend.js';
import { convGeometry, layerMacs } from '../../src/model/cost.js';
import { loadModel } from '../../src/model/io.js';
import { listLayers } from '../../src/model/layers.js';
import { filterError, registerScheme, schemeFor, schemeVariants, selectSchemes, targetLayer } from '../../src/schemes/index.js';
import { CHARCNN, FASHION_TRAIN, NESTED, RESIDUAL, SCHEME_VARIANTS, cli, imageSubset, tempDir } from '../helpers.js';
import { IDENTITY } from './identity-scheme.js';
import { compressModel } from '../../src/commands/compress.js';
import { selectLayers } from '../../src/plan/select.js';

before(async () => {
  await useBackend('wasm');
});

registerScheme(IDENTITY);

const VARIANTS = SCHEME_VARIANTS;

const FIXTURES: [string, string][] = [['charcnn', CHARCNN], ['residual', RESIDUAL], ['nested', NESTED]];

describe('reported MACs and parameters equal a count of the layers actually built', () => {
  for (const variant of VARIANTS) {
    for (const [name, fixture] of FIXTURES) {
      test(`${variant.title} on ${name}`, async () => {
        const { model, topology } = await loadModel(fixture);
        const scheme = schemeFor(variant);
        const layers = listLayers(model);
        // Every layer the scheme can replace, at about a ninth of its full rank (the counts do not depend
        // on it; a higher one only costs SVD time), separable at a few basis filters (ALS sweeps cost
        // time in proportion to the rank).
        const names = layers.filter((l) => l.className === 'Conv2D' && l.calls.length === 1 && scheme.refuses(l) === null).map((l) => l.name);
        const { chosen } = selectLayers(layers, selectSchemes(variant), names, undefined);
        const rank = new Map(chosen.map((l) => [l.name, Math.max(1, Math.floor(scheme.fullRank(convGeometry(l)) / (variant.separable ? 27 : 9)))]));
        const result = await compressModel(model, { ...variant, rank, layers: names, allowSlower: true, topology });
        const built = new Map(listLayers(result.model).map((l) => [l.name, l]));
        assert.equal(result.layers.length, names.length);
        for (const r of result.layers) {
          const pieces = r.newLayers.map((n) => built.get(n)!);
          assert.ok(pieces.every(Boolean), `${r.name}: every new layer is in the built model`);
          const macs = pieces.reduce((s, l) => s + (layerMacs(l) ?? NaN), 0);
          const params = pieces.reduce((s, l) => s + l.params, 0);
          assert.equal(r.macsAfter, macs, `${r.name}: reported MACs ${r.macsAfter}, built ${macs}`);
          assert.equal(r.paramsAfter, params, `${r.name}: reported params ${r.paramsAfter}, built ${params}`);
        }
        const total = listLayers(result.model).reduce((s, l) => s + (layerMacs(l) ?? 0), 0);
        assert.equal(result.totalMacsAfter, total, 'whole-model MACs after');
        result.model.dispose();
      });
    }
  }
});

/** Singular values of a row-major rows×cols matrix, by ml-matrix. */
function singularValues(values: ArrayLike<number>, rows: number, cols: number): number[] {
  const m = new Matrix(rows, cols);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) m.set(i, j, values[i * cols + j]);
  return new SVD(m, { autoTranspose: true, computeLeftSingularVectors: false, computeRightSingularVectors: false }).diagonal;
}

describe('scheme 1 at reduced rank reaches the per-channel SVD optimum', () => {
  test('charcnn conv2 and conv3, ranks 1, 4, 20', async () => {
    const { model, topology } = await loadModel(CHARCNN);
    const scheme = schemeFor(VARIANTS[1]);
    for (const name of ['conv2', 'conv3']) {
      const target = targetLayer(listLayers(model).find((l) => l.name === name)!, topology);
      const { kh, kw, C, N } = target.geometry;
      const D = kh * kw;
      // Channel c's N×D slice: row n holds filter n's kh×kw taps on channel c.
      const spectra = Array.from({ length: C }, (_, c) => {
        const slice = new Float64Array(N * D);
        for (let t = 0; t < D; t++) for (let n = 0; n < N; n++) slice[n * D + t] = target.kernel[(t * C + c) * N + n];
        return singularValues(slice, N, D);
      });
      const total = spectra.flat().reduce((a, s) => a + s * s, 0);
      for (const rank of [1, 4, 20]) {
        const optimum = Math.sqrt(spectra.reduce((a, s) => a + s.slice(rank).reduce((b, x) => b + x * x, 0), 0) / total);
        const actual = filterError(scheme.factorize(target, rank));
        assert.ok(Math.abs(actual - optimum) < 1e-4 * Math.max(optimum, 0.01), `${name} rank ${rank}: ${actual} vs optimum ${optimum}`);
      }
    }
  });
});

/** Largest difference of two tensors relative to the second's largest magnitude. */
function relativeMaxDiff(a: tf.Tensor, b: tf.Tensor): number {
  return tf.tidy(() => a.sub(b).abs().max().dataSync()[0] / b.abs().max().dataSync()[0]);
}

describe('every registered scheme against the full op', () => {
  for (const variant of schemeVariants()) {
    test(`${variant.title}: at full rank the model is unchanged; the factored forward pass and reported cost equal the layers written (charcnn)`, async () => {
      const { model, topology } = await loadModel(CHARCNN);
      const scheme = schemeFor(variant);
      // The first layer of charcnn the scheme is made for (conv1 for spatial convs, conv4 for 1×1 ones): small and quick.
      const layer = listLayers(model).find((l) => variant.madeFor(l) && l.calls.length === 1 && scheme.refuses(l) === null);
      assert.ok(layer, `charcnn has a layer ${variant.title} is made for`);
      const g = convGeometry(layer);
      const result = await compressModel(model, { ...variant, rank: scheme.fullRank(g), layers: [layer.name], allowSlower: true, topology });
      const x = tf.randomUniform([3, ...(model.inputs[0].shape.slice(1) as number[])], 0, 1, 'float32', 3);
      const diff = relativeMaxDiff(result.model.predict(x) as tf.Tensor, model.predict(x) as tf.Tensor);
      assert.ok(diff < 1e-4, `full rank: outputs differ by ${diff.toExponential(2)} of their scale`);
      const [f] = result.factorizations;
      const built = new Map(listLayers(result.model).map((l) => [l.name, l]));
      const newLayers = f.scheme.layers(f).map((l) => built.get(l.config.name)!);
      const form = f.scheme.factored(f.target, f.rank);
      const input = tf.randomNormal([2, g.inH, g.inW, g.C], 0, 1, 'float32', 5) as tf.Tensor4D;
      const factors = f.factors.map((w) => tf.tensor(w.values, w.shape));
      // The stock layers written, run one after another, against the factored form plus the bias and the last layer's activation.
      const expected = tf.tidy(() => newLayers.reduce((h, l) => l.layer.apply(h) as tf.Tensor, input as tf.Tensor).reshape([-1, g.N]));
      const activation = tf.layers.activation({ activation: (newLayers[newLayers.length - 1].config.activation ?? 'linear') as 'linear' });
      const mine = tf.tidy(() => activation.apply(form.forward(input, factors).add(f.bias ? tf.tensor1d(f.bias) : tf.scalar(0))) as tf.Tensor);
      const forwardDiff = relativeMaxDiff(mine, expected);
      assert.ok(forwardDiff < 1e-5, `factored forward differs from the layers written by ${forwardDiff.toExponential(2)}`);
      assert.equal(result.layers[0].macsAfter, newLayers.reduce((s, l) => s + (layerMacs(l) ?? NaN), 0), 'reported MACs');
      assert.equal(result.layers[0].paramsAfter, newLayers.reduce((s, l) => s + l.params, 0), 'reported parameters');
      tf.dispose([x, input, ...factors, expected, mine]);
      form.dispose();
      result.model.dispose();
    });
  }
});

describe('a scheme registered outside src/schemes runs through compress end to end', () => {
  test('--scheme identity on charcnn conv2+conv3, filter-only and with data: the written model computes what the original does', async () => {
    const images = imageSubset(FASHION_TRAIN, 4);
    const { model } = await loadModel(CHARCNN);
    const x = tf.randomUniform([4, 24, 24, 1], 0, 1, 'float32', 11);
    const reference = model.predict(x) as tf.Tensor;
    for (const data of [[], ['--data', images]]) {
      const out = path.join(tempDir(), 'identity');
      const run = await cli(['compress', CHARCNN, '--scheme', 'identity', '--rank', '1', '--layers', 'conv2,conv3', '--allow-slower', '--quantize', 'none', '--out', out, ...data]);
      assert.equal(run.code, 0, run.stderr);
      const saved = JSON.parse(fs.readFileSync(path.join(out, 'model.json'), 'utf8'));
      assert.deepEqual(saved.userDefinedMetadata.lowrank.replaced.map((r: { layer: string; scheme: string }) => [r.layer, r.scheme]), [['conv2', 'identity'], ['conv3', 'identity']]);
      const written = (await loadModel(out)).model;
      const diff = relativeMaxDiff(written.predict(x) as tf.Tensor, reference);
      assert.ok(diff < 1e-6, `${data.length ? 'with data' : 'filter-only'}: outputs differ by ${diff.toExponential(2)}`);
      written.dispose();
    }
    tf.dispose([x, reference]);
  });
});
