// Orthonormalisation of tall float32 blocks on the tfjs backend: column-equilibrated CholeskyQR.
//
// One pass: M = ZᵀZ (tf.matMul), D = diag(M)^½, Cholesky of D⁻¹MD⁻¹ = RᵀR in float64 (JS, ℓ³/3),
// Q = Z·(D⁻¹R⁻¹) (tf.matMul). Two passes (CholeskyQR2) give orthonormality to float32 precision
// whenever the equilibrated block has condition number ≲ 10³. Equilibration matters: in subspace
// iteration the columns of Z = G·Q are nearly orthogonal but have wildly different norms (≈ λ_j), so
// scaling them first keeps CholeskyQR stable even for steeply decaying spectra. Columns that are
// numerically dependent on earlier ones (tiny Cholesky pivot) are replaced by random directions,
// which is harmless in a subspace iteration (the next product re-grows them) and keeps the basis
// full rank.
import * as tf from '@tensorflow/tfjs';
import { invertUpper } from './eigen.js';
import type { Random } from '../runtime/random.js';

/** Squared pivot below which a column is treated as dependent on the earlier ones. */
const DEPENDENT_PIVOT2 = 1e-4;

interface PassResult {
  q: tf.Tensor2D;
  /** Columns found numerically dependent on earlier ones (left un-orthogonalised in q). */
  deficient: number[];
  /** max |(ZᵀZ)_ij| / (d_i d_j) over i ≠ j: how far the input was from orthogonal. */
  maxOffDiag: number;
}

function gramOf(z: tf.Tensor2D): Float32Array {
  const g = tf.tidy(() => tf.matMul(tf.transpose(z) as tf.Tensor2D, z));
  const data = g.dataSync() as Float32Array;
  g.dispose();
  return data;
}

/**
 * One CholeskyQR pass with column equilibration: Q = Z·D⁻¹R⁻¹ (caller owns Q). Columns that are
 * numerically dependent on earlier ones are left out of the factorisation (their Q column is just
 * the scaled input column) and reported, for the caller to replace.
 */
function cholQRPass(z: tf.Tensor2D, l: number): PassResult {
  const m = gramOf(z);
  const d = new Float64Array(l);
  const deficient: number[] = [];
  let scale = 0;
  for (let j = 0; j < l; j++) {
    const x = m[j * l + j];
    d[j] = x > 0 && Number.isFinite(x) ? Math.sqrt(x) : 0;
    if (d[j] > scale) scale = d[j];
  }
  // Right-looking row Cholesky of the equilibrated Gram; dependent columns are skipped.
  const r = new Float64Array(l * l);
  let maxOffDiag = 0;
  for (let j = 0; j < l; j++) {
    const rowj = j * l;
    if (!(d[j] > scale * 1e-30)) {
      deficient.push(j);
      continue;
    }
    const dj = d[j];
    for (let c = j + 1; c < l; c++) {
      const v = d[c] > 0 ? m[rowj + c] / (dj * d[c]) : 0;
      r[rowj + c] = v;
      const av = Math.abs(v);
      if (av > maxOffDiag) maxOffDiag = av;
    }
    let piv = 1;
    for (let p = 0; p < j; p++) {
      const x = r[p * l + j];
      piv -= x * x;
    }
    if (!(piv > DEPENDENT_PIVOT2)) {
      deficient.push(j);
      for (let c = j; c < l; c++) r[rowj + c] = 0;
      continue;
    }
    for (let p = 0; p < j; p++) {
      const rp = p * l;
      const x = r[rp + j];
      if (x === 0) continue;
      for (let c = j + 1; c < l; c++) r[rowj + c] -= x * r[rp + c];
    }
    const rjj = Math.sqrt(piv);
    r[rowj + j] = rjj;
    const inv = 1 / rjj;
    for (let c = j + 1; c < l; c++) r[rowj + c] *= inv;
  }
  // Dependent columns: unit column in R (Q column = scaled input column, replaced by the caller).
  for (const j of deficient) {
    for (let p = 0; p < j; p++) r[p * l + j] = 0;
    r[j * l + j] = 1;
    if (!(d[j] > 0)) d[j] = 1;
  }
  const rinv = invertUpper(r, l);
  // S = D⁻¹ R⁻¹ (row i scaled by 1/d_i)
  const s = new Float32Array(l * l);
  for (let i = 0; i < l; i++) {
    const inv = 1 / d[i];
    for (let c = i; c < l; c++) s[i * l + c] = rinv[i * l + c] * inv;
  }
  const q = tf.tidy(() => tf.matMul(z, tf.tensor2d(s, [l, l]))) as tf.Tensor2D;
  return { q, deficient, maxOffDiag };
}

/** Replaces the listed columns of z by random Gaussian columns (returns a new tensor). */
function replaceColumns(z: tf.Tensor2D, cols: number[], rng: Random): tf.Tensor2D {
  const [rows, l] = z.shape;
  const keep = new Float32Array(l).fill(1);
  for (const c of cols) keep[c] = 0;
  const rnd = new Float32Array(rows * l);
  for (let i = 0; i < rows; i++) {
    for (const c of cols) rnd[i * l + c] = rng.gaussian();
  }
  return tf.tidy(() => tf.add(tf.mul(z, tf.tensor2d(keep, [1, l])), tf.tensor2d(rnd, [rows, l])) as tf.Tensor2D);
}

/**
 * Orthonormal basis (rows×l, float32) of the column span of z (not disposed), by `passes` ≥ 1
 * equilibrated CholeskyQR passes. Dependent columns are replaced by random directions. A further
 * pass is added automatically while the previous one started far from orthogonal.
 */
export function orthonormalize(z: tf.Tensor2D, passes: number, rng: Random): tf.Tensor2D {
  const l = z.shape[1];
  const requested = passes;
  let cur = z;
  let done = 0;
  let replacements = 0;
  try {
    while (done < passes) {
      const res = cholQRPass(cur, l);
      if (cur !== z) cur.dispose();
      cur = res.q;
      done++;
      if (res.deficient.length > 0) {
        // Swap in random directions; the next pass orthogonalises them against the rest.
        if (++replacements > 3) throw new Error('orthonormalize: could not build a full-rank basis');
        const next = replaceColumns(cur, res.deficient, rng);
        cur.dispose();
        cur = next;
        if (done === passes) passes++;
        continue;
      }
      // A pass leaves O(ε·κ²) residue. Single-pass requests (inner iterations) only need a well
      // conditioned basis; final (≥ 2-pass) requests want float32-level orthogonality, so the last
      // pass must have started from an already nearly orthonormal block.
      const limit = requested >= 2 ? 1e-3 : 0.5;
      if (done === passes && res.maxOffDiag > limit && passes < requested + 2) passes++;
    }
    const out = cur;
    cur = z;
    return out;
  } finally {
    if (cur !== z) cur.dispose();
  }
}
