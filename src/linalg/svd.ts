// Singular values / truncated SVD of float32 matrices (row-major), fast at VGG scale.
//
// Both functions work on the Gram matrix of the smaller side, G = A·Aᵀ (or Aᵀ·A), formed with one
// tf.matMul on the active backend (wasm/XNNPACK ≈ 15–30 GFLOP/s vs ≈ 1 GFLOP/s for plain JS loops).
//
// squaredSingularValues: σ² = eig(G). Small G: float64 Gram + dense JS eigensolver. Large G: the
//   two-stage reduction of LAPACK's dsytrd_2stage — dense → band (bandwidth 32) with the O(n³) work
//   in tf.matMul (reduce.ts), band → tridiagonal by bulge chasing in JS (band.ts, O(n²b)), then
//   implicit QL. A plain JS Householder tridiagonalisation of a 1536² matrix is memory/JS-bound
//   (several seconds); this is ≈ 1 s.
//
// truncatedSvd: block subspace iteration on G with Rayleigh–Ritz (see subspaceSvd), or an exact
//   dense eigen-decomposition of G when the block would cover most of the spectrum anyway.
import * as tf from '@tensorflow/tfjs';
import { bandToTridiagonal } from './band.js';
import { symmetricEigen, tridiagonalQL } from './eigen.js';
import { orthonormalize } from './orth.js';
import { denseToBand } from './reduce.js';
import { Rng } from './rng.js';
import { matmulF64, matmulTransAF64, orthonormalizeColumnsF64, rowGramF64 } from './dense.js';
import { gramTensor, take, transposeF32 } from './tfmat.js';

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
const BAND = 32;
/** Subspace iteration limits: outer iterations, products with G, Chebyshev degree. */
const MAX_OUTER = 12;
const MAX_PRODUCTS = 40;
const MAX_DEGREE = 6;
/** Largest T_d(x₁) allowed: the filter's dynamic range inside one float32 column. */
const CHEB_RANGE = 1e5;
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
  if (m <= 32 || l >= 0.6 * m) return denseSvd(a, m, n, k, rng);
  return subspaceSvd(a, m, n, k, l, rng);
}

/** Exact path: full eigen-decomposition of G = A·Aᵀ (float64 when affordable), U = top-k vectors. */
function denseSvd(a: Float32Array, m: number, n: number, k: number, rng: Rng): TruncatedSvd {
  lastSvdInfo = { path: 'dense', block: m, iterations: 0, polish: 0 };
  const { values, vectors } = symmetricEigen(gramSmallSide(a, m, n, 1e9), m, true);
  const w = vectors as Float64Array;
  const u = new Float64Array(m * k);
  for (let i = 0; i < m; i++) for (let j = 0; j < k; j++) u[i * k + j] = w[i * m + j];
  const s = new Float64Array(k);
  for (let j = 0; j < k; j++) s[j] = Math.sqrt(Math.max(values[j], 0));
  return { u: Float32Array.from(u), s, v: rightVectors(a, m, n, u, s, k, null, rng) };
}

/**
 * V = AᵀU·diag(1/σ), orthonormalised (columns whose σ is at the rounding level are completed to an
 * orthonormal set; re-orthonormalisation changes UΣVᵀ only at that level). Float64 JS when cheap,
 * else on the backend with `tAt` = Aᵀ (n×m) if given.
 */
function rightVectors(a: Float32Array, m: number, n: number, u: Float32Array | Float64Array, s: Float64Array, k: number, tAt: tf.Tensor2D | null, rng: Rng, passes = 2): Float32Array {
  const tiny = s[0] * 1e-7;
  const inv = new Float64Array(k);
  for (let j = 0; j < k; j++) inv[j] = s[j] > tiny && s[j] > 0 ? 1 / s[j] : 0;
  if (m * n * k <= JS_MADDS && n * k * k <= JS_MADDS) {
    const v = matmulTransAF64(a, u, m, n, k); // Aᵀ U
    for (let i = 0; i < n; i++) for (let j = 0; j < k; j++) v[i * k + j] *= inv[j];
    orthonormalizeColumnsF64(v, n, k, () => rng.gaussian());
    return Float32Array.from(v);
  }
  const own = tAt === null;
  const at = tAt ?? tf.tensor2d(transposeF32(a, m, n), [n, m]);
  try {
    const u32 = u instanceof Float32Array ? u : Float32Array.from(u);
    const y = tf.tidy(() => tf.mul(tf.matMul(at, tf.tensor2d(u32, [m, k])), tf.tensor2d(Float32Array.from(inv), [1, k])) as tf.Tensor2D);
    const q = orthonormalize(y, passes, rng);
    y.dispose();
    return take(q);
  } finally {
    if (own) at.dispose();
  }
}

/**
 * Block subspace iteration on G = A·Aᵀ (m ≤ n) with ℓ = k + p columns:
 *   Q ← orth(G·Q) (equilibrated CholeskyQR, see orth.ts), starting from Q = orth(G·Ω), Ω a seeded
 * Gaussian block, until the energy captured by the leading k columns stops improving relative to
 * the residual energy ‖A‖² − captured (so the rank-k error is within ~1e-5 relative of where the
 * iteration is heading), or an iteration cap. Then Rayleigh–Ritz: eig(QᵀGQ) (float64, JS),
 * U = Q·W_k, σ = √θ, V = AᵀU/σ.
 * Steep spectra (θ_k < 1e-3·θ₁): the float32 Gram carries errors of order ε·σ₁², which swamp the
 * small directions, so the Ritz block is refined by a few one-sided sweeps U ← orth(A·orth(Aᵀ·U))
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
    let z: tf.Tensor2D;
    let h: Float64Array;
    for (let it = 1; ; it++) {
      info.iterations = it;
      z = keep(tf.matMul(g, q) as tf.Tensor2D);
      products++;
      const qq = q;
      const zz = z;
      h = Float64Array.from(take(tf.tidy(() => tf.matMul(tf.transpose(qq), zz))));
      // Ritz values of the block (values only; ≈ (4/3)ℓ³ flops in JS).
      const theta = symmetricEigen(h, l, false).values;
      let captured = 0;
      for (let j = 0; j < k; j++) captured += theta[j];
      const residual = Math.max(normA2 - captured, 0);
      const gain = captured - prev;
      prev = captured;
      // Geometric convergence: what is left to gain ≈ gain·ρ/(1−ρ), with ρ the larger of the
      // filter's predicted contraction and the observed ratio of successive gains.
      // (The prediction assumes b ≥ λ_{ℓ+1}, which the first Ritz estimates undershoot: until a ratio
      // has been observed, do not trust it below 0.3.)
      const rhoObs = it >= 3 && prevGain > 0 ? gain / prevGain : 0.3;
      const rho = Math.min(0.99, Math.max(1e-4, rhoPred, rhoObs));
      prevGain = gain;
      const remaining = (gain * rho) / (1 - rho);
      const noise = 1e-6 * captured; // float32 resolution of the Ritz values
      // remaining ≤ 2e-4·residual ⇒ rank-k error within ≈ 1e-4 (relative) of the limit.
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
    const rr = symmetricEigen(h, l, true);
    const theta = rr.values;
    const w = rr.vectors as Float64Array;
    info.products = products;
    const steep = !(theta[k - 1] > 1e-3 * theta[0]);
    if (!steep) {
      const wk = new Float32Array(l * k);
      for (let i = 0; i < l; i++) for (let j = 0; j < k; j++) wk[i * k + j] = w[i * l + j];
      const s = new Float64Array(k);
      for (let j = 0; j < k; j++) s[j] = Math.sqrt(Math.max(theta[j], 0));
      const u = take(tf.tidy(() => tf.matMul(qFinal, tf.tensor2d(wk, [l, k]))));
      drop(q);
      // U holds exact Ritz vectors, so AᵀU/σ is orthonormal up to rounding: one pass suffices.
      return { u, s, v: rightVectors(a, m, n, u, s, k, tAt, rng, 1) };
    }
    // Steep spectrum: one-sided refinement of the whole Ritz block, then float64 Rayleigh–Ritz.
    let u = keep(tf.tidy(() => tf.matMul(qFinal, tf.tensor2d(Float32Array.from(w), [l, l]))) as tf.Tensor2D);
    drop(q);
    // Each sweep shrinks the out-of-block error by ≈ θ_ℓ/θ_k.
    const ratio = theta[l - 1] > 0 ? Math.min(0.95, theta[l - 1] / theta[k - 1]) : 0;
    const sweeps = ratio > 0 ? Math.min(6, Math.max(2, Math.ceil(Math.log(1e-4) / Math.log(ratio)))) : 2;
    for (let sw = 0; sw < sweeps; sw++) {
      const y = keep(tf.matMul(tAt, u) as tf.Tensor2D);
      const vb = keep(orthonormalize(y, 1, rng));
      drop(y);
      const x = keep(tf.matMul(tA, vb) as tf.Tensor2D);
      drop(vb);
      drop(u);
      u = keep(orthonormalize(x, sw === sweeps - 1 ? 2 : 1, rng));
      drop(x);
      info.polish = sw + 1;
    }
    live.delete(u);
    return blockRayleighRitz(a, m, n, take(u), l, k, tAt, rng);
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
  const { values, vectors } = symmetricEigen(rowGramF64(b, l, n), l, true);
  const w = vectors as Float64Array;
  const wk = new Float64Array(l * k);
  for (let i = 0; i < l; i++) for (let j = 0; j < k; j++) wk[i * k + j] = w[i * l + j];
  const s = new Float64Array(k);
  for (let j = 0; j < k; j++) s[j] = Math.sqrt(Math.max(values[j], 0));
  let uk: Float32Array | Float64Array;
  if (m * l * k <= JS_MADDS) uk = matmulF64(u, wk, m, l, k);
  else uk = take(tf.tidy(() => tf.matMul(tf.tensor2d(u, [m, l]), tf.tensor2d(Float32Array.from(wk), [l, k]))));
  return { u: Float32Array.from(uk), s, v: rightVectors(a, m, n, uk, s, k, tAt, rng) };
}
