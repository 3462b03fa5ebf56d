// Singular values / truncated SVD of float32 matrices (row-major), fast at VGG scale: the two
// functions the rest of lowrank uses for linear algebra.
//
// Both work on the Gram matrix of the smaller side, G = A·Aᵀ (or Aᵀ·A), formed with one
// tf.matMul on the active backend (wasm/XNNPACK ≈ 20–30 GFLOP/s here vs ≤ 1–2 GFLOP/s for JS loops;
// matMul with transposeA/B is ~10× slower on wasm, so transposes are done explicitly). Both are
// synchronous (tensors are read back with dataSync).
//
// spectrum: σ² = eig(G). Small G (≤ 256): float64 Gram + dense JS eigensolver. Large G: the
//   two-stage reduction of LAPACK's dsytrd_2stage — dense → band (bandwidth 16, grouped panels,
//   O(n³) work in tf.matMul: reduce.ts), band → tridiagonal by bulge chasing in JS (band.ts,
//   O(n²b)), implicit QL. Measured at 1536²: Gram ≈ 0.3 s, stage 1 ≈ 0.6 s, stage 2 ≈ 0.2 s, QL
//   0.03 s; a one-stage JS Householder tridiagonalisation alone takes ≈ 2.5 s there.
//
// truncatedSvd: Chebyshev-filtered block subspace iteration on G with Rayleigh–Ritz (subspace.ts),
//   or, when the block would cover ≥ 60 % of the spectrum anyway, an exact dense eigen-decomposition
//   of G (denseSvd). Plain power iteration needs ~18 products with G to get within 1e-4 of the
//   Eckart–Young error on a flat (Gaussian) 1536² spectrum at k = 384; the filter needs ~10.
import { bandToTridiagonal } from './band.js';
import { rowGramF64 } from './dense.js';
import { eigenFromTridiagonal, symmetricEigen, tridiagonalizeSymmetric, tridiagonalQL } from './eigen.js';
import { completeBasis } from './householder.js';
import { denseToBand } from './reduce.js';
import { DENSE_EIG_MAX, leadingEigenpairs, rightVectors, significant, type SvdDiagnostics, type TruncatedSvd } from './ritz.js';
import { subspaceSvd } from './subspace.js';
import { gramTensor, readAndDispose, transposeF32 } from './tfmat.js';
import { xoshiro128plus, type Random } from '../runtime/random.js';

export type { SvdDiagnostics, TruncatedSvd };

/** Bandwidth of the two-stage reduction (balances tf panel overhead vs JS bulge chasing). */
const BAND = 16;
/** The dense path forms its Gram matrix in float64 JS up to this many multiply-adds. */
const DENSE_GRAM_JS = 1.2e9;

function checkArgs(name: string, a: Float32Array, m: number, n: number): void {
  if (!Number.isInteger(m) || !Number.isInteger(n) || m < 0 || n < 0) throw new Error(`${name}: bad shape ${m}×${n}`);
  if (a.length < m * n) throw new Error(`${name}: expected ${m * n} entries, got ${a.length}`);
}

/** Gram matrix of the smaller side in float64: exact in JS when cheap, else a float32 tf.matMul. */
function gramSmallSide(a: Float32Array, m: number, n: number, jsBudget: number): Float64Array {
  const s = Math.min(m, n);
  const t = Math.max(m, n);
  if ((s * s * t) / 2 <= jsBudget) return rowGramF64(m <= n ? a : transposeF32(a, m, n), s, t);
  return Float64Array.from(readAndDispose(gramTensor(a, m, n)));
}

/**
 * The spectrum of the row-major m×n matrix A: all min(m,n) squared singular values σ², descending
 * (the eigenvalues of the smaller Gram matrix; float32 accuracy relative to σ₁², clamped at 0).
 */
export function spectrum(a: Float32Array, m: number, n: number): Float64Array {
  checkArgs('spectrum', a, m, n);
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

/** Diagnostics of a call that iterated nothing. */
function noIterations(path: SvdDiagnostics['path'], block: number): SvdDiagnostics {
  return { path, block, subspaceIterations: 0, polishSweeps: 0, products: 0, filterDegree: 0 };
}

/**
 * Rank-k truncated SVD A ≈ U·diag(s)·Vᵀ of the row-major m×n matrix A (k is clamped to min(m,n)).
 * Uses the active tfjs backend for the large products; reproducible (seeded by the shape and k).
 * How it went (path, block size, subspace iterations, …) is written into `diagnostics` if given.
 */
export function truncatedSvd(a: Float32Array, m: number, n: number, k: number, diagnostics?: SvdDiagnostics): TruncatedSvd {
  checkArgs('truncatedSvd', a, m, n);
  if (!Number.isInteger(k) || k < 0) throw new Error(`truncatedSvd: bad rank ${k}`);
  // Reset first: k = 0 and A = 0 iterate nothing.
  const info = Object.assign(diagnostics ?? ({} as SvdDiagnostics), noIterations('dense', 0));
  k = Math.min(k, m, n);
  if (k === 0) return { u: new Float32Array(0), s: new Float64Array(0), v: new Float32Array(0) };
  const rng = xoshiro128plus(0x51ced ^ Math.imul(m, 7919) ^ Math.imul(n, 31) ^ k);
  let nonzero = false;
  for (let i = 0; i < m * n && !nonzero; i++) nonzero = a[i] !== 0;
  if (!nonzero) {
    // A = 0: σ = 0 and any orthonormal U, V.
    return { u: completeBasis(new Float32Array(0), m, 0, k, rng), s: new Float64Array(k), v: completeBasis(new Float32Array(0), n, 0, k, rng) };
  }
  if (m > n) {
    // Work on the wide transpose: Aᵀ = V S Uᵀ.
    const r = truncatedSvdWide(transposeF32(a, m, n), n, m, k, rng, info);
    return { u: r.v, s: r.s, v: r.u };
  }
  return truncatedSvdWide(a.length === m * n ? a : a.subarray(0, m * n), m, n, k, rng, info);
}

/** m ≤ n: the Gram side is the m×m matrix A·Aᵀ. */
function truncatedSvdWide(a: Float32Array, m: number, n: number, k: number, rng: Random, info: SvdDiagnostics): TruncatedSvd {
  const l = Math.min(m, k + Math.max(10, Math.ceil(0.1 * k)));
  // A block covering most of the spectrum costs as much as the full problem: go dense.
  const r = m <= 32 || l >= 0.6 * m ? denseSvd(a, m, n, k, rng, info) : subspaceSvd(a, m, n, k, l, rng, info);
  // float32 Gram diagonals (sums of squares) are only good to ~1e-5 relative at these lengths:
  // make the column norms exact in float64.
  normalizeColumns(r.u, m, k);
  normalizeColumns(r.v, n, k);
  return r;
}

/** Scales each of the k columns of the row-major rows×k x to unit norm (float64 sums). */
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

/** Exact path: eigen-decomposition of G = A·Aᵀ (float64 when affordable), U = top-k vectors. */
function denseSvd(a: Float32Array, m: number, n: number, k: number, rng: Random, info: SvdDiagnostics): TruncatedSvd {
  Object.assign(info, noIterations('dense', m));
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
