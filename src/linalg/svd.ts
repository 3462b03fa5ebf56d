// Singular values / truncated SVD of float32 matrices (row-major), fast at VGG scale.
//
// Both functions work on the Gram matrix of the smaller side, G = A·Aᵀ (or Aᵀ·A), formed with one
// tf.matMul on the active backend (wasm/XNNPACK ≈ 20–30 GFLOP/s here vs ≤ 1–2 GFLOP/s for JS loops;
// matMul with transposeA/B is ~10× slower on wasm, so transposes are done explicitly).
//
// squaredSingularValues: σ² = eig(G). Small G (≤ 256): float64 Gram + dense JS eigensolver. Large
//   G: the two-stage reduction of LAPACK's dsytrd_2stage — dense → band (bandwidth 16, grouped
//   panels, O(n³) work in tf.matMul: reduce.ts), band → tridiagonal by bulge chasing in JS (band.ts,
//   O(n²b)), implicit QL. Measured at 1536²: Gram ≈ 0.3 s, stage 1 ≈ 0.6 s, stage 2 ≈ 0.2 s, QL
//   0.03 s; a one-stage JS Householder tridiagonalisation alone takes ≈ 2.5 s there.
//
// truncatedSvd: Chebyshev-filtered block subspace iteration on G with Rayleigh–Ritz (subspaceSvd),
//   or, when the block would cover ≥ 60 % of the spectrum anyway, an exact dense eigen-decomposition
//   of G (denseSvd). Plain power iteration needs ~18 products with G to get within 1e-4 of the
//   Eckart–Young error on a flat (Gaussian) 1536² spectrum at k = 384; the filter needs ~10.
import * as tf from '@tensorflow/tfjs';
import { bandToTridiagonal } from './band.js';
import { eigenFromTridiagonal, symmetricEigen, tridiagonalizeSymmetric, tridiagonalQL, type TridiagonalForm } from './eigen.js';
import { orthonormalize } from './orth.js';
import { denseToBand } from './reduce.js';
import { Rng } from './rng.js';
import { matmulF64, matmulTransAF64, orthonormalizeColumnsF64, rowGramF64 } from './dense.js';
import { gramTensor, take, transposeF32 } from './tfmat.js';
import { topEigenpairsOf } from './topeig.js';
import { completeBasis } from './householder.js';

export interface TruncatedSvd {
  /** m×k row-major, orthonormal columns (left singular vectors). */
  u: Float32Array;
  /** k singular values, descending. */
  s: Float64Array;
  /** n×k row-major, orthonormal columns (right singular vectors). */
  v: Float32Array;
}

/** Diagnostics of the last truncatedSvd call (for benchmarks/tests). */
export interface SvdInfo {
  path: 'dense' | 'subspace';
  /** Block size ℓ = k + oversampling (subspace path). */
  block: number;
  /** Subspace iterations on the Gram matrix. */
  iterations: number;
  /** Extra A-based refinement sweeps (steep spectra). */
  polish: number;
  /** Products with G (subspace path). */
  products?: number;
  /** Largest Chebyshev filter degree used (subspace path). */
  degree?: number;
}

export let lastSvdInfo: SvdInfo = { path: 'dense', block: 0, iterations: 0, polish: 0 };

/** Largest min(m,n) for which squaredSingularValues uses the dense float64 JS eigensolver. */
const DENSE_EIG_MAX = 256;
/** Bandwidth of the two-stage reduction (balances tf panel overhead vs JS bulge chasing). */
const BAND = 16;
/** Subspace iteration limits: outer iterations, products with G, Chebyshev degree. */
const MAX_OUTER = 12;
const MAX_PRODUCTS = 40;
const MAX_DEGREE = 3;
/** Largest T_d(x₁) allowed: the filter's dynamic range inside one float32 column. */
const CHEB_RANGE = 1e5;
/** The dense path forms its Gram matrix in float64 JS up to this many multiply-adds. */
const DENSE_GRAM_JS = 1.2e9;
/** Products with at most this many multiply-adds are done in float64 JS, larger ones on the backend. */
const JS_MADDS = 3e7;

function checkArgs(name: string, a: Float32Array, m: number, n: number): void {
  if (!Number.isInteger(m) || !Number.isInteger(n) || m < 0 || n < 0) throw new Error(`${name}: bad shape ${m}×${n}`);
  if (a.length < m * n) throw new Error(`${name}: expected ${m * n} entries, got ${a.length}`);
}

/** Gram matrix of the smaller side in float64: exact in JS when cheap, else a float32 tf.matMul. */
function gramSmallSide(a: Float32Array, m: number, n: number, jsBudget: number): Float64Array {
  const s = Math.min(m, n);
  const t = Math.max(m, n);
  if ((s * s * t) / 2 <= jsBudget) return rowGramF64(m <= n ? a : transposeF32(a, m, n), s, t);
  return Float64Array.from(take(gramTensor(a, m, n)));
}

/**
 * All min(m,n) squared singular values of the row-major m×n matrix A, descending (the eigenvalues
 * of the smaller Gram matrix; float32 accuracy relative to σ₁², clamped at 0).
 */
export function squaredSingularValues(a: Float32Array, m: number, n: number): Float64Array {
  checkArgs('squaredSingularValues', a, m, n);
  const s = Math.min(m, n);
  if (s === 0) return new Float64Array(0);
  let values: Float64Array;
  if (s <= DENSE_EIG_MAX) {
    values = symmetricEigen(gramSmallSide(a, m, n, 4e7), s, false).values;
  } else {
    const g = gramTensor(a, m, n);
    let band: { ab: Float64Array; ld: number };
    try {
      band = denseToBand(g, s, BAND);
    } finally {
      g.dispose();
    }
    const { d, e } = bandToTridiagonal(band.ab, s, BAND, band.ld);
    tridiagonalQL(d, e, s, null);
    values = d.sort().reverse();
  }
  for (let i = 0; i < s; i++) if (!(values[i] > 0)) values[i] = 0;
  return values;
}

/**
 * Rank-k truncated SVD A ≈ U·diag(s)·Vᵀ of the row-major m×n matrix A (k is clamped to min(m,n)).
 * Synchronous; uses the active tfjs backend for the large products.
 */
export function truncatedSvd(a: Float32Array, m: number, n: number, k: number): TruncatedSvd {
  checkArgs('truncatedSvd', a, m, n);
  if (!Number.isInteger(k) || k < 0) throw new Error(`truncatedSvd: bad rank ${k}`);
  k = Math.min(k, m, n);
  if (k === 0) return { u: new Float32Array(0), s: new Float64Array(0), v: new Float32Array(0) };
  const rng = new Rng(0x51ced ^ Math.imul(m, 7919) ^ Math.imul(n, 31) ^ k);
  let nonzero = false;
  for (let i = 0; i < m * n && !nonzero; i++) nonzero = a[i] !== 0;
  if (!nonzero) {
    // A = 0: σ = 0 and any orthonormal U, V.
    lastSvdInfo = { path: 'dense', block: 0, iterations: 0, polish: 0 };
    return { u: completeBasis(new Float32Array(0), m, 0, k, rng), s: new Float64Array(k), v: completeBasis(new Float32Array(0), n, 0, k, rng) };
  }
  if (m > n) {
    // Work on the wide transpose: Aᵀ = V S Uᵀ.
    const r = truncatedSvdWide(transposeF32(a, m, n), n, m, k, rng);
    return { u: r.v, s: r.s, v: r.u };
  }
  return truncatedSvdWide(a.length === m * n ? a : a.subarray(0, m * n), m, n, k, rng);
}

/** m ≤ n: the Gram side is the m×m matrix A·Aᵀ. */
function truncatedSvdWide(a: Float32Array, m: number, n: number, k: number, rng: Rng): TruncatedSvd {
  const l = Math.min(m, k + Math.max(10, Math.ceil(0.1 * k)));
  // A block covering most of the spectrum costs as much as the full problem: go dense.
  const r = m <= 32 || l >= 0.6 * m ? denseSvd(a, m, n, k, rng) : subspaceSvd(a, m, n, k, l, rng);
  // float32 Gram diagonals (sums of squares) are only good to ~1e-5 relative at these lengths:
  // make the column norms exact in float64.
  normalizeColumns(r.u, m, k);
  normalizeColumns(r.v, n, k);
  return r;
}

function normalizeColumns(x: Float32Array, rows: number, k: number): void {
  const norm = new Float64Array(k);
  for (let i = 0; i < rows; i++) {
    const ri = i * k;
    for (let j = 0; j < k; j++) norm[j] += x[ri + j] * x[ri + j];
  }
  for (let j = 0; j < k; j++) norm[j] = norm[j] > 0 ? 1 / Math.sqrt(norm[j]) : 1;
  for (let i = 0; i < rows; i++) {
    const ri = i * k;
    for (let j = 0; j < k; j++) x[ri + j] *= norm[j];
  }
}

/**
 * Leading eigenpairs of a symmetric float64 matrix: all values (descending) and `count` vectors
 * (n×count row-major). Exact dense QL for small n, inverse iteration + tf back-transform above.
 */
function leadingEigenpairs(h: Float64Array, n: number, count: number, rng: Rng, tri?: TridiagonalForm): { values: Float64Array; vectors: Float32Array | Float64Array } {
  const t = tri ?? tridiagonalizeSymmetric(h, n);
  if (n <= DENSE_EIG_MAX) {
    const { values, vectors } = eigenFromTridiagonal(t, true);
    const w = vectors as Float64Array;
    const out = new Float64Array(n * count);
    for (let i = 0; i < n; i++) for (let j = 0; j < count; j++) out[i * count + j] = w[i * n + j];
    return { values, vectors: out };
  }
  const values = eigenFromTridiagonal(t, false).values;
  return topEigenpairsOf(t, values, count, rng);
}

/** Number of leading eigenvalues above `rel`·λ₁ (at most k): the directions worth computing. */
function significant(values: Float64Array, k: number, rel: number): number {
  let c = 0;
  while (c < k && values[c] > rel * values[0]) c++;
  return c;
}

/** Exact path: eigen-decomposition of G = A·Aᵀ (float64 when affordable), U = top-k vectors. */
function denseSvd(a: Float32Array, m: number, n: number, k: number, rng: Rng): TruncatedSvd {
  lastSvdInfo = { path: 'dense', block: m, iterations: 0, polish: 0 };
  const exact = (m * m * n) / 2 <= DENSE_GRAM_JS;
  const g = gramSmallSide(a, m, n, DENSE_GRAM_JS);
  const tri = tridiagonalizeSymmetric(g, m);
  const values = eigenFromTridiagonal(tri, false).values;
  // Eigenvalues at the rounding level of G carry no direction: complete those columns instead.
  const c = Math.max(1, significant(values, k, exact ? 1e-13 : 1e-7));
  const { vectors } = leadingEigenpairs(g, m, c, rng, tri);
  const s = new Float64Array(k);
  for (let j = 0; j < c; j++) s[j] = Math.sqrt(Math.max(values[j], 0));
  const u = completeBasis(vectors, m, c, k, rng);
  return { u: Float32Array.from(u), s, v: rightVectors(a, m, n, u, s, k, null, rng) };
}

/**
 * V = AᵀU·diag(1/σ) for the columns whose σ is above the float32 noise level (orthonormalised by
 * `passes` CholeskyQR passes, which changes UΣVᵀ only at that level); the remaining columns are an
 * orthonormal completion. Float64 JS when cheap, else on the backend with `tAt` = Aᵀ (n×m) if given.
 */
function rightVectors(a: Float32Array, m: number, n: number, u: Float32Array | Float64Array, s: Float64Array, k: number, tAt: tf.Tensor2D | null, rng: Rng, passes = 2): Float32Array {
  let c = 0;
  while (c < k && s[c] > s[0] * 1e-7) c++;
  if (c === 0) return completeBasis(new Float32Array(0), n, 0, k, rng);
  const uc = new Float64Array(m * c);
  for (let i = 0; i < m; i++) for (let j = 0; j < c; j++) uc[i * c + j] = u[i * k + j];
  let vc: Float32Array | Float64Array;
  if (m * n * c <= JS_MADDS && n * c * c <= JS_MADDS) {
    const v = matmulTransAF64(a, uc, m, n, c); // Aᵀ U
    for (let i = 0; i < n; i++) for (let j = 0; j < c; j++) v[i * c + j] /= s[j];
    orthonormalizeColumnsF64(v, n, c, () => rng.gaussian());
    vc = v;
  } else {
    const own = tAt === null;
    const at = tAt ?? tf.tensor2d(transposeF32(a, m, n), [n, m]);
    try {
      const inv = new Float32Array(c);
      for (let j = 0; j < c; j++) inv[j] = 1 / s[j];
      const y = tf.tidy(() => tf.mul(tf.matMul(at, tf.tensor2d(Float32Array.from(uc), [m, c])), tf.tensor2d(inv, [1, c])) as tf.Tensor2D);
      const q = orthonormalize(y, passes, rng);
      y.dispose();
      vc = take(q);
    } finally {
      if (own) at.dispose();
    }
  }
  return completeBasis(vc, n, c, k, rng);
}

/**
 * Block subspace iteration on G = A·Aᵀ (m ≤ n) with ℓ = k + p columns, p = max(10, k/10):
 *   Q₀ = orth(G·Ω) (Ω seeded Gaussian); each outer iteration forms Z = G·Q, H = QᵀZ and its Ritz
 *   values θ (float64 JS), then Q ← orth(T_d((2G − b)/b)·Q) — a Chebyshev filter with b = θ_ℓ that
 *   damps the unwanted part of the spectrum — with equilibrated CholeskyQR (orth.ts).
 * Stop when the top-k Ritz energy Σθ_i has converged to within 2e-4 of the residual energy
 * ‖A‖² − Σθ_i (⇒ rank-k error within ~1e-4 of the Eckart–Young optimum), judged from geometric
 * extrapolation of the gains, or when the gain is at float32 noise level.
 * Then Rayleigh–Ritz: top-k eigenvectors W of H, U = Q·W, σ = √θ, V = AᵀU/σ.
 * Steep spectra (θ_k < 1e-3·θ₁): the float32 Gram carries errors of order ε·σ₁², which swamp the
 * small directions, so the block is refined by a few one-sided sweeps U ← orth(A·orth(Aᵀ·U))
 * (errors of order ε·σ₁ only) and the final Rayleigh–Ritz is done on B = UᵀA in float64.
 */
function subspaceSvd(a: Float32Array, m: number, n: number, k: number, l: number, rng: Rng): TruncatedSvd {
  let normA2 = 0;
  for (let i = 0; i < m * n; i++) normA2 += a[i] * a[i];
  const info: SvdInfo = { path: 'subspace', block: l, iterations: 0, polish: 0 };
  lastSvdInfo = info;
  const tA = tf.tensor2d(a, [m, n]);
  const tAt = tf.tensor2d(transposeF32(a, m, n), [n, m]);
  const g = tf.matMul(tA, tAt) as tf.Tensor2D;
  const live = new Set<tf.Tensor>();
  const keep = <T extends tf.Tensor>(t: T): T => {
    live.add(t);
    return t;
  };
  const drop = (t: tf.Tensor): void => {
    live.delete(t);
    t.dispose();
  };
  try {
    const z0 = keep(tf.tidy(() => tf.matMul(g, tf.tensor2d(rng.gaussianArray(m * l), [m, l]))) as tf.Tensor2D);
    let q = keep(orthonormalize(z0, 1, rng));
    drop(z0);
    let products = 1;
    let prev = -Infinity;
    let prevGain = Infinity;
    // Predicted per-iteration contraction of the rank-k energy defect for the filter just applied.
    let rhoPred = 0.99;
    let prevRatio = 1;
    let z: tf.Tensor2D;
    let tri: TridiagonalForm;
    let h: Float64Array;
    for (let it = 1; ; it++) {
      info.iterations = it;
      z = keep(tf.matMul(g, q) as tf.Tensor2D);
      products++;
      const qq = q;
      const zz = z;
      // Ritz values of the block (values only; the tridiagonal form is kept for the final vectors).
      h = Float64Array.from(take(tf.tidy(() => tf.matMul(tf.transpose(qq), zz))));
      tri = tridiagonalizeSymmetric(h, l);
      const theta = eigenFromTridiagonal(tri, false).values;
      let captured = 0;
      for (let j = 0; j < k; j++) captured += theta[j];
      const residual = Math.max(normA2 - captured, 0);
      const gain = captured - prev;
      prev = captured;
      // Geometric convergence: what is left to gain ≈ gain·ρ/(1−ρ). ρ is the largest of the last two
      // observed gain ratios and the filter's prediction; with fewer than two observed ratios a slow
      // mode may still hide behind fast early progress, so ρ = 0.95 is assumed until then.
      const ratio = prevGain > 0 && Number.isFinite(prevGain) ? gain / prevGain : 1;
      const rho = it >= 4 ? Math.min(0.95, Math.max(1e-4, rhoPred, ratio, prevRatio)) : 0.95;
      prevRatio = ratio;
      prevGain = gain;
      const remaining = (gain * rho) / (1 - rho);
      const noise = 1e-6 * captured; // float32 resolution of the Ritz values
      // remaining ≤ 2e-4·residual ⇒ the rank-k error is within ≈ 1e-4 (relative) of its limit, the
      // Eckart–Young optimum. (This energy test is what the error needs; individual Ritz values
      // near σ_k of a flat spectrum settle much later and would cost many more products.)
      if (it >= 2 && (remaining <= 2e-4 * residual || gain <= noise)) break;
      if (it >= MAX_OUTER || products >= MAX_PRODUCTS) break;
      // Chebyshev filter T_d((2G − b)/b) with b = smallest Ritz value: damps the unwanted part of the
      // spectrum ([0, b]) like e^{−d·acosh(x)} rather than the (λ_{ℓ+1}/λ_k)^d of plain powers — a
      // big win for flat spectra. d is capped so that T_d(x₁) ≤ 1e5 (float32 dynamic range inside a
      // column); steep spectra get d = 1 (≈ plain power iteration).
      const b = theta[l - 1];
      let y: tf.Tensor2D;
      if (b > 1e-6 * theta[0]) {
        const x1 = (2 * theta[0]) / b - 1;
        let d = 1;
        while (d < MAX_DEGREE && Math.cosh((d + 1) * Math.acosh(x1)) <= CHEB_RANGE) d++;
        d = Math.max(1, Math.min(d, MAX_PRODUCTS - products));
        const xk = (2 * theta[k - 1]) / b - 1;
        const td = xk > 1 ? Math.cosh(d * Math.acosh(xk)) : 1;
        rhoPred = 1 / (td * td);
        const c = 2 / b;
        let y0 = q;
        let y1 = keep(tf.tidy(() => tf.sub(tf.mul(zz, c), qq)) as tf.Tensor2D);
        for (let j = 2; j <= d; j++) {
          const a0 = y0;
          const a1 = y1;
          const y2 = keep(tf.tidy(() => tf.sub(tf.sub(tf.mul(tf.matMul(g, a1), 2 * c), tf.mul(a1, 2)), a0)) as tf.Tensor2D);
          products++;
          if (y0 !== q) drop(y0);
          y0 = y1;
          y1 = y2;
        }
        if (y0 !== q) drop(y0);
        y = y1;
        info.degree = Math.max(info.degree ?? 0, d);
      } else {
        y = z;
        rhoPred = theta[l - 1] > 0 ? Math.pow(theta[l - 1] / theta[k - 1], 2) : 1e-4;
      }
      const next = keep(orthonormalize(y, 1, rng));
      if (y !== z) drop(y);
      drop(z);
      drop(q);
      q = next;
    }
    // Rayleigh–Ritz on G: H = QᵀZ = QᵀGQ (already formed for the last block).
    const qFinal = q;
    drop(z);
    const theta = eigenFromTridiagonal(tri, false).values;
    info.products = products;
    const steep = !(theta[k - 1] > 1e-3 * theta[0]);
    if (!steep) {
      const w = leadingEigenpairs(h, l, k, rng, tri).vectors;
      const s = new Float64Array(k);
      for (let j = 0; j < k; j++) s[j] = Math.sqrt(Math.max(theta[j], 0));
      const u = take(tf.tidy(() => tf.matMul(qFinal, tf.tensor2d(Float32Array.from(w), [l, k]))));
      drop(q);
      // U holds exact Ritz vectors, so AᵀU/σ is orthonormal up to rounding: one pass suffices.
      return { u, s, v: rightVectors(a, m, n, u, s, k, tAt, rng, 1) };
    }
    // Steep spectrum: one-sided refinement of the block, then float64 Rayleigh–Ritz. Directions that
    // A maps to float32 noise are dropped from the block after the first half-sweep (they belong to a
    // numerically rank-deficient A, only cost time, and are completed at the end).
    // (Q itself is a fine start: simultaneous iteration keeps its columns ordered strongest first.)
    const y0 = keep(tf.matMul(tAt, qFinal) as tf.Tensor2D);
    drop(q);
    // Each sweep shrinks the out-of-block error by ≈ θ_ℓ/θ_k.
    const ratio = theta[l - 1] > 0 ? Math.min(0.95, theta[l - 1] / theta[k - 1]) : 0;
    const sweeps = ratio > 0 ? Math.min(6, Math.max(2, Math.ceil(Math.log(1e-4) / Math.log(ratio)))) : 2;
    let u: tf.Tensor2D | null = null;
    for (let sw = 0; sw < sweeps; sw++) {
      const y: tf.Tensor2D = sw === 0 ? y0 : keep(tf.matMul(tAt, u as tf.Tensor2D) as tf.Tensor2D);
      const vb: tf.Tensor2D = keep(orthonormalize(y, 1, rng));
      drop(y);
      let x: tf.Tensor2D = keep(tf.matMul(tA, vb) as tf.Tensor2D);
      drop(vb);
      if (sw === 0) {
        // vb is orthonormal with the strong directions first, so later columns that A maps to
        // float32 noise are directions of a numerically rank-deficient A: drop them.
        const xx = x;
        const norms = take(tf.tidy(() => tf.sum(tf.square(xx), 0)));
        let maxNorm = 0;
        for (let j = 0; j < l; j++) maxNorm = Math.max(maxNorm, norms[j]);
        const kept: number[] = [];
        for (let j = 0; j < l; j++) if (norms[j] > 1e-12 * maxNorm) kept.push(j);
        if (kept.length === 0) kept.push(0);
        if (kept.length < l) {
          x = keep(tf.tidy(() => tf.gather(xx, tf.tensor1d(kept, 'int32'), 1)) as tf.Tensor2D);
          drop(xx);
          l = kept.length;
          info.block = l;
        }
      }
      if (u) drop(u);
      u = keep(orthonormalize(x, sw === sweeps - 1 ? 2 : 1, rng));
      drop(x);
      info.polish = sw + 1;
    }
    const uFinal = u as tf.Tensor2D;
    live.delete(uFinal);
    return blockRayleighRitz(a, m, n, take(uFinal), l, k, tAt, rng);
  } finally {
    for (const t of live) t.dispose();
    g.dispose();
    tA.dispose();
    tAt.dispose();
  }
}

/**
 * Best rank-k approximation of A within the column span of the orthonormal m×l block U:
 * B = UᵀA, B·Bᵀ = W Θ Wᵀ (float64), U_k = U·W_k, σ = √θ, V_k = AᵀU_k/σ.
 */
function blockRayleighRitz(a: Float32Array, m: number, n: number, u: Float32Array, l: number, k: number, tAt: tf.Tensor2D, rng: Rng): TruncatedSvd {
  let b: Float64Array;
  if (l * m * n <= JS_MADDS) {
    b = matmulTransAF64(u, a, m, l, n);
  } else {
    const bt = take(tf.tidy(() => tf.matMul(tAt, tf.tensor2d(u, [m, l])))); // n×l
    b = new Float64Array(l * n);
    for (let j = 0; j < n; j++) for (let i = 0; i < l; i++) b[i * n + j] = bt[j * l + i];
  }
  const c2 = rowGramF64(b, l, n);
  const tri = tridiagonalizeSymmetric(c2, l);
  const values = eigenFromTridiagonal(tri, false).values;
  // Directions below the float32 resolution of B (σ < ~3e-7·σ₁) are completed instead.
  const c = Math.max(1, significant(values, k, 1e-13));
  const wk = leadingEigenpairs(c2, l, c, rng, tri).vectors;
  const s = new Float64Array(k);
  for (let j = 0; j < c; j++) s[j] = Math.sqrt(Math.max(values[j], 0));
  let uc: Float32Array | Float64Array;
  if (m * l * c <= JS_MADDS) uc = matmulF64(u, wk, m, l, c);
  else uc = take(tf.tidy(() => tf.matMul(tf.tensor2d(u, [m, l]), tf.tensor2d(Float32Array.from(wk), [l, c]))));
  const uk = completeBasis(uc, m, c, k, rng);
  return { u: Float32Array.from(uk), s, v: rightVectors(a, m, n, uk, s, k, tAt, rng) };
}
