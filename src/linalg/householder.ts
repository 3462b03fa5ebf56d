// Householder helpers shared by the eigen/SVD code: the compact WY factor of a block of reflectors
// (dlarft), blocked application of a sequence of reflectors on the tfjs backend, and orthonormal
// completion of a basis.
import * as tf from '@tensorflow/tfjs';
import { orthonormalize } from './orth.js';
import type { Random } from '../runtime/random.js';
import { readAndDispose } from './tfmat.js';

const WY_BLOCK = 64;

/**
 * Computes X ← H_0 H_1 ⋯ H_{p−1} X for reflectors H_q = I − τ_q v_q v_qᵀ, where row q of `vt`
 * (p×rows, float64) holds v_q (entries before `start[q]` are zero, v_q[start[q]] = 1). X is a
 * rows×cols row-major float32 matrix; the work is grouped 64 reflectors at a time into I − V T Vᵀ
 * and done with tf.matMul (≈ 4·rows·p·cols flops).
 */
export function applyReflectors(vt: Float64Array, tau: Float64Array, start: Int32Array, p: number, rows: number, x: Float32Array, cols: number): Float32Array {
  let cur = tf.tensor2d(x, [rows, cols]);
  try {
    for (let q1 = p; q1 > 0; q1 -= WY_BLOCK) {
      const q0 = Math.max(0, q1 - WY_BLOCK);
      const nb = q1 - q0;
      const vtb = new Float32Array(nb * rows);
      const vb = new Float32Array(rows * nb);
      for (let j = 0; j < nb; j++) {
        const src = (q0 + j) * rows;
        for (let i = start[q0 + j]; i < rows; i++) {
          const raw = vt[src + i];
          const val = Math.abs(raw) < 1e-30 ? 0 : raw; // no float32 denormals (slow in wasm)
          vtb[j * rows + i] = val;
          vb[i * nb + j] = val;
        }
      }
      const t = reflectorBlockT(vt, rows, tau, start, q0, nb);
      const prev = cur;
      cur = tf.tidy(() => {
        const w = tf.matMul(tf.tensor2d(t, [nb, nb]), tf.matMul(tf.tensor2d(vtb, [nb, rows]), prev));
        return tf.sub(prev, tf.matMul(tf.tensor2d(vb, [rows, nb]), w)) as tf.Tensor2D;
      });
      prev.dispose();
    }
    const out = readAndDispose(cur);
    cur = tf.tensor2d(new Float32Array(0), [0, cols]);
    return out;
  } finally {
    cur.dispose();
  }
}

/**
 * LAPACK dlarft (forward, rowwise storage): the upper-triangular count×count T (row-major float32)
 * with H_first ⋯ H_{first+count−1} = I − V T Vᵀ. Reflector q is row q of `vt` (rows of length
 * `len`): zero before lead[q], 1 at lead[q]; H_q = I − tau[q]·v_q v_qᵀ.
 */
export function reflectorBlockT(vt: Float64Array, len: number, tau: Float64Array, lead: Int32Array, first: number, count: number): Float32Array {
  const t = new Float64Array(count * count);
  const z = new Float64Array(count);
  for (let j = 0; j < count; j++) {
    const tj = tau[first + j];
    t[j * count + j] = tj;
    if (tj === 0) continue;
    const vj = (first + j) * len;
    // z[i] = v_iᵀ v_j for i < j (v_j is zero before its leading 1, and lead[i] ≤ lead[j]).
    for (let i = 0; i < j; i++) {
      const vi = (first + i) * len;
      let s = 0;
      for (let p = lead[first + j]; p < len; p++) s += vt[vi + p] * vt[vj + p];
      z[i] = s;
    }
    // T[0:j, j] = −τ_j T[0:j, 0:j] z
    for (let i = 0; i < j; i++) {
      let s = 0;
      for (let p = i; p < j; p++) s += t[i * count + p] * z[p];
      t[i * count + j] = -tj * s;
    }
  }
  return Float32Array.from(t);
}

/**
 * Orthonormal completion: given x (rows×c, orthonormal columns, row-major), returns rows×k whose
 * first c columns are x and whose other k − c columns are an orthonormal basis of part of the
 * orthogonal complement of span(x). Uses the Householder QR x = H_0 ⋯ H_{c−1}[R; 0]: columns
 * c .. k−1 of H_0 ⋯ H_{c−1} are exactly orthogonal to span(x) — unlike random vectors + CholeskyQR,
 * this stays accurate when k is close to rows. When few columns are needed (and `rng` is given),
 * projected random vectors are used instead (cheaper: no O(rows·c²) JS QR).
 */
export function completeBasis(x: Float32Array | Float64Array, rows: number, c: number, k: number, rng?: Random): Float32Array {
  const out = new Float32Array(rows * k);
  for (let i = 0; i < rows; i++) for (let j = 0; j < c; j++) out[i * k + j] = x[i * c + j];
  if (k <= c) return out;
  if (k > rows) throw new Error('completeBasis: more columns than rows');
  if (rng && 2 * (k - c) <= rows - c) {
    // Few columns relative to the complement: random block, projected out of span(x) twice, then
    // CholeskyQR2 (a random rows'×need block with need ≤ rows'/2 is well conditioned).
    const need = k - c;
    const x32 = x instanceof Float32Array ? x : Float32Array.from(x);
    const r = new Float32Array(rows * need);
    for (let i = 0; i < r.length; i++) r[i] = rng.gaussian();
    const q = tf.tidy(() => {
      let y: tf.Tensor2D = tf.tensor2d(r, [rows, need]);
      if (c === 0) return y;
      const xt = tf.tensor2d(x32.subarray(0, rows * c), [rows, c]);
      const xtT = tf.transpose(xt);
      for (let pass = 0; pass < 2; pass++) y = tf.sub(y, tf.matMul(xt, tf.matMul(xtT, y))) as tf.Tensor2D;
      return y;
    });
    const o = orthonormalize(q, 2, rng);
    q.dispose();
    const comp = readAndDispose(o);
    for (let i = 0; i < rows; i++) for (let j = 0; j < need; j++) out[i * k + c + j] = comp[i * need + j];
    return out;
  }
  // Householder QR of x, columns stored as rows of vt (float64).
  const vt = new Float64Array(c * rows);
  for (let i = 0; i < rows; i++) for (let j = 0; j < c; j++) vt[j * rows + i] = x[i * c + j];
  const tau = new Float64Array(c);
  const start = new Int32Array(c);
  for (let q = 0; q < c; q++) {
    start[q] = q;
    const row = q * rows;
    const alpha = vt[row + q];
    let xn2 = 0;
    for (let i = q + 1; i < rows; i++) xn2 += vt[row + i] * vt[row + i];
    if (xn2 === 0) {
      tau[q] = 0;
      for (let i = q + 1; i < rows; i++) vt[row + i] = 0;
      vt[row + q] = 1;
      continue;
    }
    const nrm = Math.sqrt(alpha * alpha + xn2);
    const beta = alpha >= 0 ? -nrm : nrm;
    const scale = 1 / (alpha - beta);
    for (let i = q + 1; i < rows; i++) vt[row + i] *= scale;
    vt[row + q] = 1;
    const tq = (beta - alpha) / beta;
    tau[q] = tq;
    for (let cc = q + 1; cc < c; cc++) {
      const cr = cc * rows;
      let s = 0;
      for (let i = q; i < rows; i++) s += vt[row + i] * vt[cr + i];
      s *= tq;
      for (let i = q; i < rows; i++) vt[cr + i] -= s * vt[row + i];
    }
    // the part of row q before q is R's column (not needed); clear it so vt holds only v_q
    for (let i = 0; i < q; i++) vt[row + i] = 0;
  }
  // E = columns c .. k−1 of the identity; Q·E = the wanted complement.
  const need = k - c;
  const e = new Float32Array(rows * need);
  for (let j = 0; j < need; j++) e[(c + j) * need + j] = 1;
  const comp = applyReflectors(vt, tau, start, c, rows, e, need);
  for (let i = 0; i < rows; i++) for (let j = 0; j < need; j++) out[i * k + c + j] = comp[i * need + j];
  return out;
}
