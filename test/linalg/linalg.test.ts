// Tests for src/linalg against ml-matrix (float64) as the exact oracle.
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { EigenvalueDecomposition, Matrix, SingularValueDecomposition, solve } from 'ml-matrix';
import { energyRank, scheme2Matrix } from '../../src/schemes/reshape.js';
import { symmetricEigen } from '../../src/linalg/eigen.js';
import { solveSymmetric } from '../../src/linalg/solve.js';
import { spectrum, truncatedSvd } from '../../src/linalg/svd.js';
import { loadModel } from '../../src/model/io.js';
import { listLayers } from '../../src/model/layers.js';
import { xoshiro128plus, type Random } from '../../src/runtime/random.js';
import { CHARCNN } from '../helpers.js';

before(async () => {
  await tf.setBackend('wasm');
  await tf.ready();
});

// ---------------------------------------------------------------------------------------------
// helpers

function randomSymmetric(n: number, rng: Random): Float64Array {
  const a = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j <= i; j++) {
      const x = rng.gaussian();
      a[i * n + j] = x;
      a[j * n + i] = x;
    }
  }
  return a;
}

/** Q·diag(λ)·Qᵀ with a random orthogonal Q (Gram–Schmidt of a Gaussian matrix). */
function symmetricWithSpectrum(lambda: number[], rng: Random): Float64Array {
  const n = lambda.length;
  const q = orthonormalColumns(n, n, rng);
  const a = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let p = 0; p < n; p++) s += q[i * n + p] * lambda[p] * q[j * n + p];
      a[i * n + j] = s;
    }
  }
  return a;
}

/** rows×cols with orthonormal columns (float64 Gram–Schmidt, two passes). */
function orthonormalColumns(rows: number, cols: number, rng: Random): Float64Array {
  const qt = new Float64Array(cols * rows);
  for (let j = 0; j < cols; j++) {
    const v = qt.subarray(j * rows, (j + 1) * rows);
    for (let i = 0; i < rows; i++) v[i] = rng.gaussian();
    for (let pass = 0; pass < 2; pass++) {
      for (let p = 0; p < j; p++) {
        const w = qt.subarray(p * rows, (p + 1) * rows);
        let d = 0;
        for (let i = 0; i < rows; i++) d += w[i] * v[i];
        for (let i = 0; i < rows; i++) v[i] -= d * w[i];
      }
    }
    let nr = 0;
    for (let i = 0; i < rows; i++) nr += v[i] * v[i];
    nr = Math.sqrt(nr);
    for (let i = 0; i < rows; i++) v[i] /= nr;
  }
  const q = new Float64Array(rows * cols);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) q[i * cols + j] = qt[j * rows + i];
  return q;
}

/**
 * rows×r with exactly orthonormal columns, cheap at any size: r distinct columns of the orthonormal
 * DCT-II matrix with random row signs (dense, delocalised, orthogonal to float64 precision).
 */
function dctColumns(rows: number, r: number, rng: Random): Float64Array {
  const freq = rng.shuffle(Array.from({ length: rows }, (_, i) => i));
  const sign = Array.from({ length: rows }, () => (rng.uniform() < 0.5 ? -1 : 1));
  const f = new Float64Array(rows * r);
  for (let p = 0; p < r; p++) {
    const k = freq[p];
    const c = Math.sqrt((k === 0 ? 1 : 2) / rows);
    for (let i = 0; i < rows; i++) f[i * r + p] = sign[i] * c * Math.cos((Math.PI * (2 * i + 1) * k) / (2 * rows));
  }
  return f;
}

interface Built {
  a: Float32Array;
  /** ‖A_float32 − A_float64‖_F: by Weyl/Mirsky, the float32 matrix's singular values and
   *  Eckart–Young errors are within this of the constructed ones. */
  rounding: number;
}

/** A = U·diag(σ)·Vᵀ (float64, then rounded to float32) with exactly orthonormal DCT factors. */
function withSpectrum(m: number, n: number, sigma: number[], rng: Random): Built {
  const r = sigma.length;
  const u = dctColumns(m, r, rng);
  const v = dctColumns(n, r, rng);
  const a = new Float32Array(m * n);
  const row = new Float64Array(n);
  let rounding = 0;
  for (let i = 0; i < m; i++) {
    row.fill(0);
    for (let p = 0; p < r; p++) {
      const c = u[i * r + p] * sigma[p];
      for (let j = 0; j < n; j++) row[j] += c * v[j * r + p];
    }
    for (let j = 0; j < n; j++) {
      a[i * n + j] = row[j];
      const d = a[i * n + j] - row[j];
      rounding += d * d;
    }
  }
  return { a, rounding: Math.sqrt(rounding) };
}

function toMatrix(a: ArrayLike<number>, m: number, n: number): Matrix {
  const x = new Matrix(m, n);
  for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) x.set(i, j, a[i * n + j]);
  return x;
}

/** Oracle singular values (descending) of the float32 matrix, via ml-matrix in float64. */
function oracleSingularValues(a: Float32Array, m: number, n: number): number[] {
  const svd = new SingularValueDecomposition(toMatrix(a, m, n), { computeLeftSingularVectors: false, computeRightSingularVectors: false, autoTranspose: true });
  return Array.from(svd.diagonal).sort((x, y) => y - x);
}

function frobenius(a: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * a[i];
  return Math.sqrt(s);
}

/**
 * ‖A − U·diag(s)·Vᵀ‖_F: float64 JS for small problems; for large ones the product is formed with a
 * float32 tf.matMul (error ≈ 1e-7·‖A‖, far inside the tolerances used below) and summed in float64.
 */
function residual(a: Float32Array, m: number, n: number, u: Float32Array, s: Float64Array, v: Float32Array, k: number): number {
  if (m * n * k > 3e7) {
    const us = new Float32Array(m * k);
    for (let i = 0; i < m; i++) for (let p = 0; p < k; p++) us[i * k + p] = u[i * k + p] * s[p];
    const vt = new Float32Array(k * n);
    for (let j = 0; j < n; j++) for (let p = 0; p < k; p++) vt[p * n + j] = v[j * k + p];
    const r = tf.tidy(() => tf.sub(tf.tensor2d(a, [m, n]), tf.matMul(tf.tensor2d(us, [m, k]), tf.tensor2d(vt, [k, n]))));
    const d = r.dataSync();
    r.dispose();
    return frobenius(d);
  }
  let total = 0;
  const row = new Float64Array(n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) row[j] = a[i * n + j];
    for (let p = 0; p < k; p++) {
      const c = u[i * k + p] * s[p];
      if (c === 0) continue;
      for (let j = 0; j < n; j++) row[j] -= c * v[j * k + p];
    }
    for (let j = 0; j < n; j++) total += row[j] * row[j];
  }
  return Math.sqrt(total);
}

/** max |XᵀX − I| for a rows×k row-major matrix (large ones via a float32 tf.matMul). */
function orthonormalityError(x: ArrayLike<number>, rows: number, k: number): number {
  let g: ArrayLike<number>;
  if (rows * k * k > 3e7) {
    const xt = new Float32Array(k * rows);
    for (let i = 0; i < rows; i++) for (let p = 0; p < k; p++) xt[p * rows + i] = x[i * k + p];
    const t = tf.tidy(() => tf.matMul(tf.tensor2d(xt, [k, rows]), tf.tensor2d(Float32Array.from(x), [rows, k])));
    g = t.dataSync();
    t.dispose();
  } else {
    const acc = new Float64Array(k * k);
    for (let i = 0; i < rows; i++) {
      for (let p = 0; p < k; p++) {
        const xp = x[i * k + p];
        if (xp === 0) continue;
        for (let q = p; q < k; q++) acc[p * k + q] += xp * x[i * k + q];
      }
    }
    for (let p = 0; p < k; p++) for (let q = 0; q < p; q++) acc[p * k + q] = acc[q * k + p];
    g = acc;
  }
  let worst = 0;
  for (let p = 0; p < k; p++) for (let q = 0; q < k; q++) worst = Math.max(worst, Math.abs(g[p * k + q] - (p === q ? 1 : 0)));
  return worst;
}

// ---------------------------------------------------------------------------------------------

describe('symmetricEigen', () => {
  const rng = xoshiro128plus(11);
  const cases: { name: string; n: number; a: () => Float64Array }[] = [
    { name: 'n=1', n: 1, a: () => Float64Array.of(-2.5) },
    { name: 'n=2', n: 2, a: () => randomSymmetric(2, rng) },
    { name: 'n=7', n: 7, a: () => randomSymmetric(7, rng) },
    { name: 'n=60', n: 60, a: () => randomSymmetric(60, rng) },
    { name: 'n=200', n: 200, a: () => randomSymmetric(200, rng) },
    { name: 'repeated eigenvalues (n=40)', n: 40, a: () => symmetricWithSpectrum(Array.from({ length: 40 }, (_, i) => [3, 3, 3, -1, -1, 0.5][i % 6]), rng) },
    {
      name: 'rank-deficient (n=50, rank 12)',
      n: 50,
      a: () => {
        const b = new Float64Array(50 * 12).map(() => rng.gaussian());
        const a = new Float64Array(50 * 50);
        for (let i = 0; i < 50; i++) for (let j = 0; j < 50; j++) for (let p = 0; p < 12; p++) a[i * 50 + j] += b[i * 12 + p] * b[j * 12 + p];
        return a;
      },
    },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const n = c.n;
      const a = c.a();
      const { values, vectors } = symmetricEigen(a, n, true);
      assert.ok(vectors);
      const scale = Math.max(1, ...Array.from(values, Math.abs));
      // values vs ml-matrix, both sorted descending
      const oracle = Array.from(new EigenvalueDecomposition(toMatrix(a, n, n), { assumeSymmetric: true }).realEigenvalues).sort((x, y) => y - x);
      for (let i = 0; i < n; i++) assert.ok(Math.abs(values[i] - oracle[i]) <= 1e-12 * scale, `λ${i}: ${values[i]} vs ${oracle[i]}`);
      for (let i = 1; i < n; i++) assert.ok(values[i] <= values[i - 1]);
      // A·v = λ·v
      for (let j = 0; j < n; j++) {
        let worst = 0;
        for (let i = 0; i < n; i++) {
          let s = 0;
          for (let p = 0; p < n; p++) s += a[i * n + p] * vectors[p * n + j];
          worst = Math.max(worst, Math.abs(s - values[j] * vectors[i * n + j]));
        }
        assert.ok(worst <= 1e-11 * scale, `residual of pair ${j}: ${worst}`);
      }
      assert.ok(orthonormalityError(vectors, n, n) <= 1e-12);
      // values-only path agrees
      const only = symmetricEigen(a, n, false);
      assert.equal(only.vectors, null);
      for (let i = 0; i < n; i++) assert.ok(Math.abs(only.values[i] - values[i]) <= 1e-13 * scale);
    });
  }
});

describe('spectrum', () => {
  const rng = xoshiro128plus(22);
  const gaussian = (m: number, n: number): Float32Array => Float32Array.from({ length: m * n }, () => rng.gaussian());
  const lowRank = (m: number, n: number, r: number): Float32Array => {
    const b = gaussian(m, r);
    const c = gaussian(r, n);
    const a = new Float32Array(m * n);
    for (let i = 0; i < m; i++) for (let p = 0; p < r; p++) for (let j = 0; j < n; j++) a[i * n + j] += b[i * r + p] * c[p * n + j];
    return a;
  };
  const cases: { name: string; m: number; n: number; a: () => Float32Array }[] = [
    { name: 'tall 120×40', m: 120, n: 40, a: () => gaussian(120, 40) },
    { name: 'wide 300×700 (two-stage path)', m: 300, n: 700, a: () => gaussian(300, 700) },
    { name: 'tall 700×300 (two-stage path)', m: 700, n: 300, a: () => gaussian(700, 300) },
    { name: 'square 400×400', m: 400, n: 400, a: () => gaussian(400, 400) },
    { name: 'rank-deficient 350×500, rank 60', m: 350, n: 500, a: () => lowRank(350, 500, 60) },
    { name: 'tiny 3×5', m: 3, n: 5, a: () => gaussian(3, 5) },
  ];
  for (const c of cases) {
    test(`${c.name}: σ² match the oracle (relative to σ₁²: 1e-5), no tensor leak`, () => {
      const a = c.a();
      const before = tf.memory().numTensors;
      const got = spectrum(a, c.m, c.n);
      assert.equal(tf.memory().numTensors, before, 'tensors leaked');
      assert.equal(got.length, Math.min(c.m, c.n));
      const oracle = oracleSingularValues(a, c.m, c.n).map((x) => x * x);
      const scale = oracle[0];
      for (let i = 0; i < oracle.length; i++) {
        assert.ok(Math.abs(got[i] - oracle[i]) <= 1e-5 * scale, `σ²[${i}]: ${got[i]} vs ${oracle[i]}`);
      }
      for (let i = 1; i < got.length; i++) assert.ok(got[i] <= got[i - 1]);
    });
  }
});

describe('truncatedSvd', () => {
  interface Case {
    name: string;
    m: number;
    n: number;
    sigma: number[];
    ks: number[];
    /** use ml-matrix's SVD of the float32 matrix as the oracle (else: the constructed spectrum) */
    mlOracle: boolean;
  }
  const decay = (r: number, q: number): number[] => Array.from({ length: r }, (_, i) => Math.pow(q, i));
  const cases: Case[] = [
    // conv2 of the fixture reshaped: (C·3)×(3·N) = 432×1152, σᵢ = 0.9^i (full rank).
    { name: '432×1152, σᵢ = 0.9^i', m: 432, n: 1152, sigma: decay(432, 0.9), ks: [1, 8, 50, 216, 432], mlOracle: true },
    // slower decay, so that the error at larger k is still far above float32 resolution
    { name: '432×1152, σᵢ = 0.99^i', m: 432, n: 1152, sigma: decay(432, 0.99), ks: [20, 100, 216], mlOracle: true },
    // transposed shape takes the other Gram side
    { name: '1152×432, σᵢ = 0.97^i', m: 1152, n: 432, sigma: decay(432, 0.97), ks: [5, 108], mlOracle: false },
    // Rank-deficient (rank 240 of 512), oracle = the constructed spectrum. Half of conv3's 1024×2048
    // and as many paths: k = 256 takes the subspace path with every Ritz product on the backend
    // (block 282 > DENSE_EIG_MAX, m·l·c > JS_MADDS) and a completed basis; k = 512 the dense one.
    { name: '512×1024, rank 240, σᵢ = 0.985^i', m: 512, n: 1024, sigma: decay(240, 0.985), ks: [1, 8, 256, 512], mlOracle: false },
  ];
  const rng = xoshiro128plus(33);
  for (const c of cases) {
    describe(c.name, () => {
      const built = withSpectrum(c.m, c.n, c.sigma, rng);
      const { a } = built;
      const normA = frobenius(a);
      let exact: number[] | null = null;
      const reference = (): number[] => {
        if (!exact) {
          const full = c.mlOracle ? oracleSingularValues(a, c.m, c.n) : [...c.sigma];
          while (full.length < Math.min(c.m, c.n)) full.push(0);
          exact = full;
        }
        return exact;
      };
      // Tolerance slack for the oracle itself (constructed spectra: float32 rounding of A).
      const slack = c.mlOracle ? 1e-12 * normA : built.rounding;
      for (const k of c.ks) {
        test(`k = ${k}`, () => {
          const sv = reference();
          const before = tf.memory().numTensors;
          const { u, s, v } = truncatedSvd(a, c.m, c.n, k);
          assert.equal(tf.memory().numTensors, before, 'tensors leaked');
          assert.equal(u.length, c.m * k);
          assert.equal(v.length, c.n * k);
          assert.equal(s.length, k);
          for (let i = 1; i < k; i++) assert.ok(s[i] <= s[i - 1] * (1 + 1e-12), 'σ descending');
          // Eckart–Young: ‖A − UΣVᵀ‖ vs sqrt(Σ_{i≥k} σᵢ²). Relative 1e-4, plus an absolute floor for
          // errors below what float32 factors can express (~1e-6·‖A‖) and the oracle's own slack.
          let tail = 0;
          for (let i = k; i < sv.length; i++) tail += sv[i] * sv[i];
          const ey = Math.sqrt(tail);
          const err = residual(a, c.m, c.n, u, s, v, k);
          const tol = 1e-4 * ey + 2e-6 * normA + slack;
          assert.ok(err <= ey + tol, `‖A − UΣVᵀ‖ = ${err}, Eckart–Young ${ey} (tol ${tol})`);
          assert.ok(err >= ey - tol, `error below the optimum? ${err} < ${ey}`);
          // singular values (relative to σ₁)
          for (let i = 0; i < k; i++) assert.ok(Math.abs(s[i] - sv[i]) <= 2e-4 * sv[0] + slack, `σ${i}: ${s[i]} vs ${sv[i]}`);
          const eu = orthonormalityError(u, c.m, k);
          const ev = orthonormalityError(v, c.n, k);
          assert.ok(eu <= 1e-5, `U not orthonormal: ${eu}`);
          assert.ok(ev <= 1e-5, `V not orthonormal: ${ev}`);
        });
      }
    });
  }

  test('k is clamped to min(m, n); k = 0 gives empty factors', () => {
    const r = xoshiro128plus(5);
    const a = Float32Array.from({ length: 6 * 4 }, () => r.gaussian());
    const full = truncatedSvd(a, 6, 4, 10);
    assert.equal(full.s.length, 4);
    assert.ok(residual(a, 6, 4, full.u, full.s, full.v, 4) <= 1e-5 * frobenius(a));
    const none = truncatedSvd(a, 6, 4, 0);
    assert.equal(none.s.length, 0);
  });

  test('zero matrix', () => {
    const a = new Float32Array(30 * 50);
    const { u, s, v } = truncatedSvd(a, 30, 50, 5);
    assert.deepEqual(Array.from(s), [0, 0, 0, 0, 0]);
    assert.ok(orthonormalityError(u, 30, 5) <= 1e-5);
    assert.ok(orthonormalityError(v, 50, 5) <= 1e-5);
    assert.deepEqual(Array.from(spectrum(a, 30, 50)), new Array(30).fill(0));
  });
});

// ---------------------------------------------------------------------------------------------
// energy ranks and exactly low-rank kernels (real kernels of the character CNN)

const FRACTIONS = [0.9, 0.95, 0.99];

/** Scheme 2 matrix (C·kh)×(kw·N) of every conv kernel of the character CNN, by layer name. */
async function charcnnMatrices(): Promise<Map<string, { a: Float32Array; m: number; n: number }>> {
  const { model } = await loadModel(CHARCNN);
  const out = new Map<string, { a: Float32Array; m: number; n: number }>();
  for (const l of listLayers(model)) {
    if (l.className !== 'Conv2D') continue;
    const kernel = l.layer.getWeights()[0];
    const [kh, kw, C, N] = kernel.shape;
    out.set(l.name, { a: scheme2Matrix(kernel.dataSync() as Float32Array, { kh, kw, C, N }), m: C * kh, n: kw * N });
  }
  return out;
}

/**
 * The energy rank by its definition, independently of energyRank: 1 + the number of prefixes
 * σ₁² + … + σ_r² that fall short of fraction·Σσ² (at most the number of values).
 */
function energyRankByDefinition(sigma2: number[], fraction: number): number {
  const total = sigma2.reduce((x, y) => x + y, 0);
  let prefix = 0;
  let short = 0;
  for (const x of sigma2) {
    prefix += x;
    if (prefix < fraction * total) short++;
  }
  return Math.min(short + 1, sigma2.length);
}

/** Eigen-decomposition of the float64 Gram matrix A·Aᵀ (m ≤ n) by ml-matrix: σ² descending, U (m×m). */
function oracleGramEigen(a: Float32Array, m: number, n: number): { sigma2: number[]; u: Matrix } {
  const x = toMatrix(a, m, n);
  const e = new EigenvalueDecomposition(x.mmul(x.transpose()), { assumeSymmetric: true });
  const order = Array.from(e.realEigenvalues.keys()).sort((p, q) => e.realEigenvalues[q] - e.realEigenvalues[p]);
  const vectors = e.eigenvectorMatrix;
  const u = new Matrix(m, m);
  order.forEach((src, j) => { for (let i = 0; i < m; i++) u.set(i, j, vectors.get(i, src)); });
  return { sigma2: order.map((i) => Math.max(e.realEigenvalues[i], 0)), u };
}

describe('energy ranks: energyRank on spectrum equals the definition on an independent SVD', () => {
  let kernels: Map<string, { a: Float32Array; m: number; n: number }>;
  before(async () => {
    kernels = await charcnnMatrices();
  });

  for (const name of ['conv1', 'conv2', 'conv4']) {
    test(`charcnn ${name}`, () => {
      const { a, m, n } = kernels.get(name)!;
      const oracle = oracleSingularValues(a, m, n).map((x) => x * x);
      const got = spectrum(a, m, n);
      for (const f of FRACTIONS) assert.equal(energyRank(got, f), energyRankByDefinition(oracle, f), `${name} (${m}×${n}) at ${f}`);
    });
  }

  const rng = xoshiro128plus(44);
  const gaussian = (m: number, n: number): Float32Array => Float32Array.from({ length: m * n }, () => rng.gaussian());
  const random: { name: string; m: number; n: number; a: () => Float32Array }[] = [
    { name: 'Gaussian 60×150 (dense path)', m: 60, n: 150, a: () => gaussian(60, 150) },
    { name: 'Gaussian 500×300 (two-stage path, tall)', m: 500, n: 300, a: () => gaussian(500, 300) },
    { name: '200×400 with σᵢ = 0.97^i', m: 200, n: 400, a: () => withSpectrum(200, 400, Array.from({ length: 200 }, (_, i) => Math.pow(0.97, i)), rng).a },
  ];
  for (const c of random) {
    test(c.name, () => {
      const a = c.a();
      const oracle = oracleSingularValues(a, c.m, c.n).map((x) => x * x);
      const got = spectrum(a, c.m, c.n);
      for (const f of FRACTIONS) assert.equal(energyRank(got, f), energyRankByDefinition(oracle, f), `at ${f}`);
    });
  }

  test('fractions hit exactly: σ² = 36, 25, 16, 9, 9, 4, 1 (prefix sums 36 61 77 86 95 99 100)', () => {
    const sigma = [6, 5, 4, 3, 3, 2, 1];
    const sigma2 = sigma.map((x) => x * x);
    // Singular values placed at shuffled positions with random signs, wide and tall.
    const order = rng.shuffle(Array.from({ length: 12 }, (_, i) => i));
    const wide = new Float32Array(7 * 12);
    sigma.forEach((x, i) => { wide[i * 12 + order[i]] = rng.uniform() < 0.5 ? -x : x; });
    const tall = Float32Array.from({ length: 12 * 7 }, (_, p) => wide[(p % 7) * 12 + Math.floor(p / 7)]);
    for (const [a, m, n] of [[wide, 7, 12], [tall, 12, 7]] as const) {
      const got = spectrum(a, m, n);
      for (const f of [0.77, 0.86, 0.95, 0.99, 1]) {
        const prefixes = sigma2.map((_, r) => sigma2.slice(0, r + 1).reduce((x, y) => x + y, 0));
        assert.ok(prefixes.includes(f * 100), `${f} is hit exactly`);
        assert.equal(energyRank(got, f), energyRankByDefinition(sigma2, f), `${m}×${n} at ${f}`);
      }
    }
  });
});

describe('truncatedSvd reproduces an exactly low-rank kernel', () => {
  // conv2 of the character CNN (432×1152) projected onto its top r left singular directions:
  // A_r = U_r·U_rᵀ·A in float64 (rounded to float32), so σ_{r+1…} = 0 up to float32 rounding.
  let conv2: { a: Float32Array; m: number; n: number };
  let u: Matrix;
  before(async () => {
    conv2 = (await charcnnMatrices()).get('conv2')!;
    u = oracleGramEigen(conv2.a, conv2.m, conv2.n).u;
  });
  // r = 1, 21, 100: subspace path; r = 300: the block covers most of the spectrum (dense path).
  for (const r of [1, 21, 100, 300]) {
    test(`rank ${r}: relative error ≤ 1e-5`, () => {
      const { a, m, n } = conv2;
      const ur = u.subMatrix(0, m - 1, 0, r - 1);
      const x = toMatrix(a, m, n);
      const low = ur.mmul(ur.transpose().mmul(x));
      const ar = Float32Array.from(low.to1DArray());
      const { u: uk, s, v } = truncatedSvd(ar, m, n, r);
      const rel = residual(ar, m, n, uk, s, v, r) / frobenius(ar);
      assert.ok(rel <= 1e-5, `‖A_r − UΣVᵀ‖/‖A_r‖ = ${rel.toExponential(2)}`);
    });
  }
});

describe('normal equations (solveSymmetric)', () => {
  /** G = AᵀA of a seeded rows×n A, as float64 row-major. */
  const gram = (rows: number, n: number, random: Random): Float64Array => {
    const a = Matrix.from1DArray(rows, n, Array.from({ length: rows * n }, () => random.gaussian()));
    return Float64Array.from(a.transpose().mmul(a).to1DArray());
  };
  // Sizes below, at and across the column blocks, with several right-hand sides.
  for (const n of [1, 5, 24, 61, 130]) {
    test(`n = ${n}: the solution ml-matrix gives`, () => {
      const random = xoshiro128plus(n);
      const g = gram(2 * n + 3, n, random);
      const m = 3;
      const b = Float64Array.from({ length: n * m }, () => random.gaussian());
      const x = solveSymmetric(g, b, n, m, 0);
      const expected = solve(
        new Matrix(Array.from({ length: n }, (_, i) => Array.from(g.subarray(i * n, (i + 1) * n)))),
        new Matrix(Array.from({ length: n }, (_, i) => Array.from(b.subarray(i * m, (i + 1) * m)))),
      ).to1DArray();
      const scale = Math.max(...expected.map(Math.abs));
      x.forEach((v, i) => assert.ok(Math.abs(v - expected[i]) <= 1e-8 * scale, `entry ${i}: ${v} vs ${expected[i]}`));
    });
  }
  test('a semi-definite G (a dead input: zero row and column) still solves, the dead unknown at 0', () => {
    const random = xoshiro128plus(9);
    const n = 40;
    const g = gram(100, n, random);
    for (let k = 0; k < n; k++) g[7 * n + k] = g[k * n + 7] = 0;
    const b = Float64Array.from({ length: n }, (_, i) => (i === 7 ? 0 : random.gaussian()));
    const x = solveSymmetric(g, b, n, 1);
    assert.equal(x[7], 0);
    // The others satisfy their equations.
    for (let i = 0; i < n; i++) {
      if (i === 7) continue;
      let s = 0;
      for (let k = 0; k < n; k++) s += g[i * n + k] * x[k];
      assert.ok(Math.abs(s - b[i]) < 1e-5 * Math.max(1, Math.abs(b[i])), `row ${i}: ${s} vs ${b[i]}`);
    }
  });
});
