/**
 * Every registered scheme variant, checked against what it actually builds: the MACs and
 * parameters it reports against the cost model's count of the stock layers it wrote, on every
 * fixture, and its filter error against an independent SVD optimum.
 */
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Matrix, SVD } from 'ml-matrix';
import { useBackend } from '../../src/runtime/backend.js';
import { convGeometry, layerMacs } from '../../src/model/cost.js';
import { loadModel } from '../../src/model/io.js';
import { listLayers } from '../../src/model/layers.js';
import { filterError, schemeFor, selectSchemes, targetLayer } from '../../src/schemes/index.js';
import { CHARCNN, NESTED, RESIDUAL, SCHEME_VARIANTS } from '../helpers.js';
import { compressModel } from '../../src/commands/compress.js';
import { selectLayers } from '../../src/plan/select.js';

before(async () => {
  await useBackend('wasm');
});

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
