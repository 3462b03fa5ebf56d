// Leading eigenpairs of a symmetric float64 matrix for the SVD's Rayleigh–Ritz / dense steps, when
// the matrix is too large for the O(n³) JS eigenvector work of symmetricEigen (QL rotations cost
// ≈ 4.5n³ flops in plain JS, seconds at n ≈ 1000):
//   Householder tridiagonalisation (JS, float64) → QL eigenvalues (O(n²)) → inverse iteration on
//   the tridiagonal matrix for the wanted vectors (O(n) per solve; vectors of eigenvalues closer
//   than 1e-5·‖T‖ are re-orthogonalised within their cluster) → back-transformation X = Q·Z with
//   the reflectors grouped 64 at a time (compact WY, tf.matMul on the active backend, float32).
// Vectors come back in float32 precision, which is all the SVD outputs carry.
import type { TridiagonalForm } from './eigen.js';
import type { Random } from '../runtime/random.js';
import { applyReflectors } from './householder.js';

const CLUSTER = 1e-5;

/**
 * Eigenvectors of the `count` largest eigenvalues of the matrix whose tridiagonal form is `tri`,
 * given all its eigenvalues (descending): n×count row-major float32, column j for values[j].
 */
export function topEigenvectors(tri: TridiagonalForm, values: Float64Array, count: number, rng: Random): Float32Array {
  count = Math.min(count, tri.n);
  return backTransform(tri, tridiagonalVectors(tri, values, count, rng), count);
}

/** Inverse iteration for the eigenvectors of T = tridiag(e, d, e) at the first `count` values. */
function tridiagonalVectors(tri: TridiagonalForm, values: Float64Array, count: number, rng: Random): Float64Array {
  const { n, d, e } = tri;
  let tnorm = 0;
  for (let i = 0; i < n; i++) tnorm = Math.max(tnorm, Math.abs(d[i]) + Math.abs(e[i]) + (i > 0 ? Math.abs(e[i - 1]) : 0));
  if (tnorm === 0) tnorm = 1;
  const eps = 2.220446049250313e-16;
  const tiny = eps * tnorm;
  // z: count×n (row j = vector j), transposed at the end.
  const z = new Float64Array(count * n);
  const dd = new Float64Array(n);
  const dl = new Float64Array(n);
  const du = new Float64Array(n);
  const du2 = new Float64Array(n);
  const swap = new Uint8Array(n);
  const b = new Float64Array(n);
  let clusterStart = 0;
  let lastShift = Infinity;
  for (let j = 0; j < count; j++) {
    if (j > 0 && Math.abs(values[j] - values[j - 1]) > CLUSTER * tnorm) clusterStart = j;
    // Separate numerically equal shifts slightly so the solves differ (as LAPACK dstein does).
    let shift = values[j];
    if (j > clusterStart && Math.abs(shift - lastShift) < 10 * tiny) shift = lastShift - 10 * tiny;
    lastShift = shift;
    factorTridiagonal(d, e, n, shift, tiny, dd, dl, du, du2, swap);
    for (let i = 0; i < n; i++) b[i] = rng.uniform() - 0.5;
    const row = j * n;
    for (let it = 0; it < 3; it++) {
      solveTridiagonal(n, dd, dl, du, du2, swap, b);
      // Re-orthogonalise within the cluster (twice is enough).
      for (let pass = 0; pass < (j > clusterStart ? 2 : 0); pass++) {
        for (let p = clusterStart; p < j; p++) {
          const rp = p * n;
          let s = 0;
          for (let i = 0; i < n; i++) s += z[rp + i] * b[i];
          for (let i = 0; i < n; i++) b[i] -= s * z[rp + i];
        }
      }
      let nrm = 0;
      for (let i = 0; i < n; i++) nrm += b[i] * b[i];
      nrm = Math.sqrt(nrm);
      if (!(nrm > 0) || !Number.isFinite(nrm)) {
        for (let i = 0; i < n; i++) b[i] = rng.uniform() - 0.5;
        continue;
      }
      const inv = 1 / nrm;
      for (let i = 0; i < n; i++) b[i] *= inv;
    }
    for (let i = 0; i < n; i++) z[row + i] = b[i];
  }
  return z;
}

/** LU with partial pivoting of T − λI (LAPACK dgttrf); zero pivots are replaced by `tiny`. */
function factorTridiagonal(
  d: Float64Array,
  e: Float64Array,
  n: number,
  lambda: number,
  tiny: number,
  dd: Float64Array,
  dl: Float64Array,
  du: Float64Array,
  du2: Float64Array,
  swap: Uint8Array,
): void {
  for (let i = 0; i < n; i++) {
    dd[i] = d[i] - lambda;
    dl[i] = e[i];
    du[i] = e[i];
    du2[i] = 0;
    swap[i] = 0;
  }
  for (let i = 0; i < n - 1; i++) {
    if (Math.abs(dd[i]) >= Math.abs(dl[i])) {
      if (dd[i] === 0) dd[i] = tiny;
      const fact = dl[i] / dd[i];
      dl[i] = fact;
      dd[i + 1] -= fact * du[i];
    } else {
      const fact = dd[i] / dl[i];
      dd[i] = dl[i];
      dl[i] = fact;
      const temp = du[i];
      du[i] = dd[i + 1];
      dd[i + 1] = temp - fact * dd[i + 1];
      if (i < n - 2) {
        du2[i] = du[i + 1];
        du[i + 1] = -fact * du[i + 1];
      }
      swap[i] = 1;
    }
  }
  if (dd[n - 1] === 0) dd[n - 1] = tiny;
}

/** Solves (T − λI)x = b in place with the factors of factorTridiagonal (LAPACK dgtts2). */
function solveTridiagonal(n: number, dd: Float64Array, dl: Float64Array, du: Float64Array, du2: Float64Array, swap: Uint8Array, b: Float64Array): void {
  for (let i = 0; i < n - 1; i++) {
    if (swap[i]) {
      const temp = b[i] - dl[i] * b[i + 1];
      b[i] = b[i + 1];
      b[i + 1] = temp;
    } else {
      b[i + 1] -= dl[i] * b[i];
    }
  }
  b[n - 1] /= dd[n - 1];
  if (n > 1) b[n - 2] = (b[n - 2] - du[n - 2] * b[n - 1]) / dd[n - 2];
  for (let i = n - 3; i >= 0; i--) b[i] = (b[i] - du[i] * b[i + 1] - du2[i] * b[i + 2]) / dd[i];
}

/** X = Q·Z for Q = H_0 H_1 ⋯ H_{n−3} (the tridiagonalisation's reflectors), Z given as count×n rows. */
function backTransform(tri: TridiagonalForm, zRows: Float64Array, count: number): Float32Array {
  const { n, w, tau } = tri;
  const zt = new Float32Array(n * count);
  // Eigenvector coordinates of T often decay exponentially; flush what would be float32 denormals
  // (they make wasm matMul crawl, and are far below float32 resolution anyway).
  for (let j = 0; j < count; j++) {
    for (let i = 0; i < n; i++) {
      const val = zRows[j * n + i];
      zt[i * count + j] = Math.abs(val) < 1e-30 ? 0 : val;
    }
  }
  const p = Math.max(0, n - 2);
  const vt = new Float64Array(p * n);
  const start = new Int32Array(p);
  for (let k = 0; k < p; k++) {
    start[k] = k + 1;
    if (tau[k] === 0) continue;
    const row = k * n;
    vt[row + k + 1] = 1;
    for (let i = k + 2; i < n; i++) vt[row + i] = w[i * n + k];
  }
  return applyReflectors(vt, tau.subarray(0, p), start, p, n, zt, count);
}
