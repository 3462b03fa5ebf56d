// Truncated SVD by block subspace iteration on G = A·Aᵀ (m ≤ n), the path svd.ts takes when the
// wanted block is small against the spectrum. Steps, each a function below:
//   startBlock        Q₀ = orth(G·Ω), Ω seeded Gaussian, ℓ = k + p columns;
//   iterateSubspace   each subspace iteration forms Z = G·Q, H = QᵀZ and its Ritz values θ
//                     (float64 JS), stops once EnergyConvergence says the rank-k energy has
//                     settled, else Q ← orth(chebyshevFilter(…)) with equilibrated CholeskyQR;
//   ritzOnGram        Rayleigh–Ritz on G: top-k eigenvectors W of H, U = Q·W, σ = √θ, V = AᵀU/σ;
//   polishSteepBlock  for steep spectra (θ_k < 1e-3·θ₁) instead: the float32 Gram carries errors of
//                     order ε·σ₁², which swamp the small directions, so the block is refined by a
//                     few one-sided sweeps U ← orth(A·orth(Aᵀ·U)) (errors of order ε·σ₁ only) and
//                     the final Rayleigh–Ritz is done on B = UᵀA in float64 (blockRayleighRitz).
import * as tf from '@tensorflow/tfjs';
import { eigenFromTridiagonal, tridiagonalizeSymmetric, type TridiagonalForm } from './eigen.js';
import { orthonormalize } from './orth.js';
import { blockRayleighRitz, leadingEigenpairs, rightVectors, type SvdDiagnostics, type TruncatedSvd } from './ritz.js';
import { readAndDispose, transposeF32 } from './tfmat.js';
import type { Random } from '../runtime/random.js';

/** Limits: subspace iterations, products with G, Chebyshev degree. */
const MAX_SUBSPACE_ITERATIONS = 12;
const MAX_PRODUCTS = 40;
const MAX_DEGREE = 3;
/** Largest T_d(x₁) allowed: the filter's dynamic range inside one float32 column. */
const CHEB_RANGE = 1e5;

/** The tensors alive during the iteration, so that an exception disposes them all. */
class LiveTensors {
  private readonly live = new Set<tf.Tensor>();

  keep<T extends tf.Tensor>(t: T): T {
    this.live.add(t);
    return t;
  }

  drop(t: tf.Tensor): void {
    this.live.delete(t);
    t.dispose();
  }

  /** Hands `t` to the caller, who disposes it. */
  release<T extends tf.Tensor>(t: T): T {
    this.live.delete(t);
    return t;
  }

  disposeAll(): void {
    for (const t of this.live) t.dispose();
    this.live.clear();
  }
}

/** Rank-k truncated SVD of the row-major m×n A (m ≤ n) with an ℓ-column block (see the file header). */
export function subspaceSvd(a: Float32Array, m: number, n: number, k: number, l: number, rng: Random, info: SvdDiagnostics): TruncatedSvd {
  let normA2 = 0;
  for (let i = 0; i < m * n; i++) normA2 += a[i] * a[i];
  Object.assign(info, { path: 'subspace', block: l, subspaceIterations: 0, polishSweeps: 0, products: 0, filterDegree: 0 });
  const tA = tf.tensor2d(a, [m, n]);
  const tAt = tf.tensor2d(transposeF32(a, m, n), [n, m]);
  const g = tf.matMul(tA, tAt) as tf.Tensor2D;
  const live = new LiveTensors();
  try {
    const q0 = startBlock(g, m, l, rng, live);
    const { q, h, tri, theta } = iterateSubspace(g, q0, normA2, k, l, rng, live, info);
    if (theta[k - 1] > 1e-3 * theta[0]) return ritzOnGram(a, m, n, k, l, q, h, tri, theta, tAt, rng, live);
    const u = polishSteepBlock(tA, tAt, q, theta, l, k, rng, live, info);
    return blockRayleighRitz(a, m, n, u, info.block, k, tAt, rng);
  } finally {
    live.disposeAll();
    g.dispose();
    tA.dispose();
    tAt.dispose();
  }
}

/** Q₀ = orth(G·Ω) for a seeded Gaussian m×ℓ Ω. */
function startBlock(g: tf.Tensor2D, m: number, l: number, rng: Random, live: LiveTensors): tf.Tensor2D {
  const z0 = live.keep(tf.tidy(() => tf.matMul(g, tf.tensor2d(rng.gaussianArray(m * l), [m, l]))) as tf.Tensor2D);
  const q0 = live.keep(orthonormalize(z0, 1, rng));
  live.drop(z0);
  return q0;
}

/**
 * Decides when the captured rank-k energy Σθ_i has converged: to within 2e-4 of the residual
 * energy ‖A‖² − Σθ_i (⇒ rank-k error within ~1e-4 of the Eckart–Young optimum), judged from
 * geometric extrapolation of the gains, or when the gain is at float32 noise level.
 */
class EnergyConvergence {
  /** Predicted per-iteration contraction of the rank-k energy defect for the filter just applied. */
  predicted = 0.99;
  private prev = -Infinity;
  private prevGain = Infinity;
  private prevRatio = 1;

  constructor(private readonly normA2: number) {}

  /** Records the top-k Ritz energy after subspace iteration `it` (from 1); true once settled. */
  settled(captured: number, it: number): boolean {
    const residual = Math.max(this.normA2 - captured, 0);
    const gain = captured - this.prev;
    this.prev = captured;
    // Geometric convergence: what is left to gain ≈ gain·ρ/(1−ρ). ρ is the largest of the last two
    // observed gain ratios and the filter's prediction; with fewer than two observed ratios a slow
    // mode may still hide behind fast early progress, so ρ = 0.95 is assumed until then.
    const ratio = this.prevGain > 0 && Number.isFinite(this.prevGain) ? gain / this.prevGain : 1;
    const rho = it >= 4 ? Math.min(0.95, Math.max(1e-4, this.predicted, ratio, this.prevRatio)) : 0.95;
    this.prevRatio = ratio;
    this.prevGain = gain;
    const remaining = (gain * rho) / (1 - rho);
    const noise = 1e-6 * captured; // float32 resolution of the Ritz values
    // remaining ≤ 2e-4·residual ⇒ the rank-k error is within ≈ 1e-4 (relative) of its limit, the
    // Eckart–Young optimum. (This energy test is what the error needs; individual Ritz values
    // near σ_k of a flat spectrum settle much later and would cost many more products.)
    return it >= 2 && (remaining <= 2e-4 * residual || gain <= noise);
  }
}

interface SubspaceState {
  /** The last block Q (m×ℓ, orthonormal), kept in `live`. */
  q: tf.Tensor2D;
  /** H = QᵀGQ (ℓ×ℓ, float64) and its tridiagonal form and eigenvalues θ (descending). */
  h: Float64Array;
  tri: TridiagonalForm;
  theta: Float64Array;
}

/** Subspace iterations from Q₀ until the rank-k energy settles or the limits are reached. */
function iterateSubspace(g: tf.Tensor2D, q0: tf.Tensor2D, normA2: number, k: number, l: number, rng: Random, live: LiveTensors, info: SvdDiagnostics): SubspaceState {
  const convergence = new EnergyConvergence(normA2);
  let q = q0;
  let products = 1; // G·Ω
  for (let it = 1; ; it++) {
    info.subspaceIterations = it;
    const z = live.keep(tf.matMul(g, q) as tf.Tensor2D);
    products++;
    const qq = q;
    // Ritz values of the block (values only; the tridiagonal form is kept for the final vectors).
    const h = Float64Array.from(readAndDispose(tf.tidy(() => tf.matMul(tf.transpose(qq), z))));
    const tri = tridiagonalizeSymmetric(h, l);
    const theta = eigenFromTridiagonal(tri, false).values;
    let captured = 0;
    for (let j = 0; j < k; j++) captured += theta[j];
    if (convergence.settled(captured, it) || it >= MAX_SUBSPACE_ITERATIONS || products >= MAX_PRODUCTS) {
      live.drop(z);
      info.products = products;
      return { q, h, tri, theta };
    }
    const filtered = chebyshevFilter(g, q, z, theta, k, l, MAX_PRODUCTS - products, live);
    products += Math.max(filtered.degree - 1, 0);
    info.filterDegree = Math.max(info.filterDegree, filtered.degree);
    convergence.predicted = filtered.contraction;
    const next = live.keep(orthonormalize(filtered.y, 1, rng));
    if (filtered.y !== z) live.drop(filtered.y);
    live.drop(z);
    live.drop(q);
    q = next;
  }
}

/**
 * Chebyshev filter T_d((2G − b)/b)·Q with b = θ_ℓ, the smallest Ritz value, given Z = G·Q: damps the
 * unwanted part of the spectrum ([0, b]) like e^{−d·acosh(x)} rather than the (λ_{ℓ+1}/λ_k)^d of
 * plain powers — a big win for flat spectra. d is capped so that T_d(x₁) ≤ 1e5 (float32 dynamic
 * range inside a column) and by the products left; steep spectra get d = 1 (≈ plain power
 * iteration). A G numerically of rank < ℓ gets Z itself (degree 0). Returns the filtered block, the
 * degree and the predicted contraction of the rank-k energy defect.
 */
function chebyshevFilter(g: tf.Tensor2D, q: tf.Tensor2D, z: tf.Tensor2D, theta: Float64Array, k: number, l: number, productsLeft: number, live: LiveTensors): { y: tf.Tensor2D; degree: number; contraction: number } {
  const b = theta[l - 1];
  if (!(b > 1e-6 * theta[0])) {
    return { y: z, degree: 0, contraction: theta[l - 1] > 0 ? Math.pow(theta[l - 1] / theta[k - 1], 2) : 1e-4 };
  }
  const x1 = (2 * theta[0]) / b - 1;
  let d = 1;
  while (d < MAX_DEGREE && Math.cosh((d + 1) * Math.acosh(x1)) <= CHEB_RANGE) d++;
  d = Math.max(1, Math.min(d, productsLeft));
  const xk = (2 * theta[k - 1]) / b - 1;
  const td = xk > 1 ? Math.cosh(d * Math.acosh(xk)) : 1;
  const c = 2 / b;
  // Three-term recurrence: Y₀ = Q, Y₁ = (c·G − I)·Q, Y_{j} = 2(c·G − I)·Y_{j−1} − Y_{j−2}.
  let y0 = q;
  let y1 = live.keep(tf.tidy(() => tf.sub(tf.mul(z, c), q)) as tf.Tensor2D);
  for (let j = 2; j <= d; j++) {
    const a0 = y0;
    const a1 = y1;
    const y2 = live.keep(tf.tidy(() => tf.sub(tf.sub(tf.mul(tf.matMul(g, a1), 2 * c), tf.mul(a1, 2)), a0)) as tf.Tensor2D);
    if (y0 !== q) live.drop(y0);
    y0 = y1;
    y1 = y2;
  }
  if (y0 !== q) live.drop(y0);
  return { y: y1, degree: d, contraction: 1 / (td * td) };
}

/** Rayleigh–Ritz on G from the last block: H = QᵀGQ is already formed. */
function ritzOnGram(a: Float32Array, m: number, n: number, k: number, l: number, q: tf.Tensor2D, h: Float64Array, tri: TridiagonalForm, theta: Float64Array, tAt: tf.Tensor2D, rng: Random, live: LiveTensors): TruncatedSvd {
  const w = leadingEigenpairs(h, l, k, rng, tri).vectors;
  const s = new Float64Array(k);
  for (let j = 0; j < k; j++) s[j] = Math.sqrt(Math.max(theta[j], 0));
  const u = readAndDispose(tf.tidy(() => tf.matMul(q, tf.tensor2d(Float32Array.from(w), [l, k]))));
  live.drop(q);
  // U holds exact Ritz vectors, so AᵀU/σ is orthonormal up to rounding: one pass suffices.
  return { u, s, v: rightVectors(a, m, n, u, s, k, tAt, rng, 1) };
}

/**
 * Steep spectrum: one-sided refinement of the block Q (a fine start: simultaneous iteration keeps
 * its columns ordered strongest first), returned as an orthonormal m×ℓ' Float32Array. Directions
 * that A maps to float32 noise are dropped from the block after the first half-sweep (they belong
 * to a numerically rank-deficient A, only cost time, and are completed at the end); info.block
 * records the ℓ' kept.
 */
function polishSteepBlock(tA: tf.Tensor2D, tAt: tf.Tensor2D, q: tf.Tensor2D, theta: Float64Array, l: number, k: number, rng: Random, live: LiveTensors, info: SvdDiagnostics): Float32Array {
  const y0 = live.keep(tf.matMul(tAt, q) as tf.Tensor2D);
  live.drop(q);
  // Each sweep shrinks the out-of-block error by ≈ θ_ℓ/θ_k.
  const ratio = theta[l - 1] > 0 ? Math.min(0.95, theta[l - 1] / theta[k - 1]) : 0;
  const sweeps = ratio > 0 ? Math.min(6, Math.max(2, Math.ceil(Math.log(1e-4) / Math.log(ratio)))) : 2;
  let u: tf.Tensor2D | null = null;
  for (let sw = 0; sw < sweeps; sw++) {
    const y: tf.Tensor2D = sw === 0 ? y0 : live.keep(tf.matMul(tAt, u as tf.Tensor2D) as tf.Tensor2D);
    const vb: tf.Tensor2D = live.keep(orthonormalize(y, 1, rng));
    live.drop(y);
    let x: tf.Tensor2D = live.keep(tf.matMul(tA, vb) as tf.Tensor2D);
    live.drop(vb);
    if (sw === 0) {
      const kept = strongColumns(x);
      if (kept.length < l) {
        const xx = x;
        x = live.keep(tf.tidy(() => tf.gather(xx, tf.tensor1d(kept, 'int32'), 1)) as tf.Tensor2D);
        live.drop(xx);
        l = kept.length;
        info.block = l;
      }
    }
    if (u) live.drop(u);
    u = live.keep(orthonormalize(x, sw === sweeps - 1 ? 2 : 1, rng));
    live.drop(x);
    info.polishSweeps = sw + 1;
  }
  return readAndDispose(live.release(u as tf.Tensor2D));
}

/**
 * Columns of X = A·V_b that are not float32 noise (at least the first). V_b is orthonormal with the
 * strong directions first, so the others are directions of a numerically rank-deficient A.
 */
function strongColumns(x: tf.Tensor2D): number[] {
  const norms = readAndDispose(tf.tidy(() => tf.sum(tf.square(x), 0)));
  let maxNorm = 0;
  for (let j = 0; j < norms.length; j++) maxNorm = Math.max(maxNorm, norms[j]);
  const kept: number[] = [];
  for (let j = 0; j < norms.length; j++) if (norms[j] > 1e-12 * maxNorm) kept.push(j);
  if (kept.length === 0) kept.push(0);
  return kept;
}
