// From an eigen-decomposition of a Gram matrix, or from an orthonormal block spanning the wanted
// directions, to SVD factors U, σ, V: shared by the dense and the subspace paths of svd.ts.
import * as tf from '@tensorflow/tfjs';
import { matmulF64, matmulTransAF64, orthonormalizeColumnsF64, rowGramF64 } from './dense.js';
import { eigenFromTridiagonal, tridiagonalizeSymmetric, type TridiagonalForm } from './eigen.js';
import { completeBasis } from './householder.js';
import { orthonormalize } from './orth.js';
import { readAndDispose, transposeF32 } from './tfmat.js';
import { topEigenvectors } from './topeig.js';
import type { Random } from '../runtime/random.js';

/** Rank-k truncated SVD A ≈ U·diag(s)·Vᵀ of a row-major m×n matrix. */
export interface TruncatedSvd {
  /** m×k row-major, orthonormal columns (left singular vectors). */
  u: Float32Array;
  /** k singular values, descending. */
  s: Float64Array;
  /** n×k row-major, orthonormal columns (right singular vectors). */
  v: Float32Array;
}

/** How truncatedSvd went (for benchmarks): filled into an object the caller passes. */
export interface SvdDiagnostics {
  path: 'dense' | 'subspace';
  /** Columns of the block: ℓ = k + oversampling (subspace path, after dropping noise directions), m (dense path). */
  block: number;
  /** Subspace iterations on the Gram matrix (subspace path). */
  subspaceIterations: number;
  /** One-sided refinement sweeps U ← orth(A·orth(Aᵀ·U)) for steep spectra (subspace path). */
  polishSweeps: number;
  /** Products with the Gram matrix (subspace path). */
  products: number;
  /** Largest Chebyshev filter degree used (subspace path; 0 = no filter). */
  filterDegree: number;
}

/** Largest symmetric matrix whose eigenvectors come from the dense float64 JS QL (O(n³)). */
export const DENSE_EIG_MAX = 256;
/** Products with at most this many multiply-adds are done in float64 JS, larger ones on the backend. */
const JS_MADDS = 3e7;

/**
 * Leading eigenpairs of a symmetric float64 matrix: all values (descending) and `count` vectors
 * (n×count row-major). Exact dense QL for small n, inverse iteration + tf back-transform above.
 */
export function leadingEigenpairs(h: Float64Array, n: number, count: number, rng: Random, tri?: TridiagonalForm): { values: Float64Array; vectors: Float32Array | Float64Array } {
  const t = tri ?? tridiagonalizeSymmetric(h, n);
  if (n <= DENSE_EIG_MAX) {
    const { values, vectors } = eigenFromTridiagonal(t, true);
    const w = vectors as Float64Array;
    const out = new Float64Array(n * count);
    for (let i = 0; i < n; i++) for (let j = 0; j < count; j++) out[i * count + j] = w[i * n + j];
    return { values, vectors: out };
  }
  const values = eigenFromTridiagonal(t, false).values;
  return { values, vectors: topEigenvectors(t, values, count, rng) };
}

/** Number of leading eigenvalues above `rel`·λ₁ (at most k): the directions worth computing. */
export function significant(values: Float64Array, k: number, rel: number): number {
  let c = 0;
  while (c < k && values[c] > rel * values[0]) c++;
  return c;
}

/**
 * V = AᵀU·diag(1/σ) for the columns whose σ is above the float32 noise level (orthonormalised by
 * `passes` CholeskyQR passes, which changes UΣVᵀ only at that level); the remaining columns are an
 * orthonormal completion. Float64 JS when cheap, else on the backend with `tAt` = Aᵀ (n×m) if given.
 */
export function rightVectors(a: Float32Array, m: number, n: number, u: Float32Array | Float64Array, s: Float64Array, k: number, tAt: tf.Tensor2D | null, rng: Random, passes = 2): Float32Array {
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
      vc = readAndDispose(q);
    } finally {
      if (own) at.dispose();
    }
  }
  return completeBasis(vc, n, c, k, rng);
}

/**
 * Best rank-k approximation of A within the column span of the orthonormal m×l block U:
 * B = UᵀA, B·Bᵀ = W Θ Wᵀ (float64), U_k = U·W_k, σ = √θ, V_k = AᵀU_k/σ.
 */
export function blockRayleighRitz(a: Float32Array, m: number, n: number, u: Float32Array, l: number, k: number, tAt: tf.Tensor2D, rng: Random): TruncatedSvd {
  let b: Float64Array;
  if (l * m * n <= JS_MADDS) {
    b = matmulTransAF64(u, a, m, l, n);
  } else {
    const bt = readAndDispose(tf.tidy(() => tf.matMul(tAt, tf.tensor2d(u, [m, l])))); // n×l
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
  else uc = readAndDispose(tf.tidy(() => tf.matMul(tf.tensor2d(u, [m, l]), tf.tensor2d(Float32Array.from(wk), [l, c]))));
  const uk = completeBasis(uc, m, c, k, rng);
  return { u: Float32Array.from(uk), s, v: rightVectors(a, m, n, uk, s, k, tAt, rng) };
}
