// Stage 1 of a two-stage symmetric eigensolver: dense → band (bandwidth b) by blocked Householder
// panels, with the O(n³) two-sided trailing updates done as tf.matMul on the active backend.
//
// For every panel of b columns: QR of the panel (JS, float64) gives Q = I − V T Vᵀ, and the
// trailing matrix becomes Qᵀ A Q = A − W Vᵀ − V Wᵀ with X = A V T, W = X − ½ V (Tᵀ Vᵀ X)
// (one r×r·r×b product and one r×2b·2b×r product per panel, ≈ 2n³ flops in total).
import * as tf from '@tensorflow/tfjs';
import { allocBand } from './band.js';
import { take } from './tfmat.js';

/**
 * Reduces the symmetric n×n float32 tensor `g` (not disposed) to a band matrix with bandwidth b,
 * returned in the lower band storage of band.ts (ld = 2b + 1, room for bulge chasing).
 */
export function denseToBand(g: tf.Tensor2D, n: number, b: number): { ab: Float64Array; ld: number } {
  const { ab, ld } = allocBand(n, b);
  let a: tf.Tensor2D = g;
  let c0 = 0;
  try {
    for (;;) {
      const r = n - c0;
      const nb = Math.min(b, r);
      // Top block rows [0, nb) of the current trailing matrix: diagonal block + panel (transposed).
      const top = r === nb ? (a.dataSync() as Float32Array) : take(a.slice([0, 0], [nb, r]));
      for (let q = 0; q < nb; q++) {
        for (let p = q; p < nb; p++) ab[(c0 + q) * ld + (p - q)] = top[p * r + q];
      }
      if (r === nb) break;
      const rp = r - nb; // rows of the panel
      const kk = Math.min(nb, rp); // number of reflectors
      // pt: kk... we keep all nb panel columns as rows of a nb×rp matrix (column q of the panel).
      const pt = new Float64Array(nb * rp);
      for (let q = 0; q < nb; q++) {
        const src = q * r + nb;
        const dst = q * rp;
        for (let i = 0; i < rp; i++) pt[dst + i] = top[src + i];
      }
      const tau = new Float64Array(kk);
      panelQR(pt, nb, rp, kk, tau);
      // R (upper trapezoidal, kk×nb) is in pt[q*rp + p] for p ≤ q, p < kk; it is the sub-diagonal block.
      for (let q = 0; q < nb; q++) {
        const pmax = Math.min(q, kk - 1);
        for (let p = 0; p <= pmax; p++) {
          // global row c0+nb+p, column c0+q
          ab[(c0 + q) * ld + (nb + p - q)] = pt[q * rp + p];
        }
      }
      // VT (kk×rp): row q = v_q (zeros before q, 1 at q).
      const vt = new Float32Array(kk * rp);
      for (let q = 0; q < kk; q++) {
        const row = q * rp;
        vt[row + q] = 1;
        for (let i = q + 1; i < rp; i++) vt[row + i] = pt[row + i];
      }
      const t = formT(vt, kk, rp, tau);
      const next = tf.tidy(() => {
        const tv = tf.tensor2d(vt, [kk, rp]);
        const v = tv.transpose() as tf.Tensor2D; // rp×kk
        const tt = tf.tensor2d(t, [kk, kk]);
        const ttT = tt.transpose() as tf.Tensor2D;
        const a22 = a.slice([nb, nb], [rp, rp]);
        const x = tf.matMul(tf.matMul(a22, v), tt); // A V T
        const m = tf.matMul(ttT, tf.matMul(tv, x)); // Tᵀ Vᵀ X
        const w = tf.sub(x, tf.mul(tf.matMul(v, m), 0.5)) as tf.Tensor2D;
        const left = tf.concat([w, v], 1); // rp×2kk
        const right = tf.concat([tv, w.transpose()], 0); // 2kk×rp
        return tf.sub(a22, tf.matMul(left, right)) as tf.Tensor2D;
      });
      if (a !== g) a.dispose();
      a = next;
      c0 += nb;
    }
  } finally {
    if (a !== g) a.dispose();
  }
  return { ab, ld };
}

/**
 * Householder QR of the rp×nb panel stored transposed in pt (row q = column q). Produces kk
 * reflectors; on exit row q holds R's column q in entries 0..q (R[p][q] = pt[q*rp + p], p ≤ q) and
 * the reflector v_q (implicit 1 at q) in entries q+1..rp-1.
 */
function panelQR(pt: Float64Array, nb: number, rp: number, kk: number, tau: Float64Array): void {
  for (let q = 0; q < kk; q++) {
    const row = q * rp;
    const alpha = pt[row + q];
    let xn2 = 0;
    for (let i = q + 1; i < rp; i++) xn2 += pt[row + i] * pt[row + i];
    if (xn2 === 0) {
      tau[q] = 0;
      continue;
    }
    const nrm = Math.sqrt(alpha * alpha + xn2);
    const beta = alpha >= 0 ? -nrm : nrm;
    const scale = 1 / (alpha - beta);
    for (let i = q + 1; i < rp; i++) pt[row + i] *= scale;
    pt[row + q] = beta;
    const tq = (beta - alpha) / beta;
    tau[q] = tq;
    // Apply H_q to the remaining columns c > q: col −= τ (vᵀ col) v, with v[q] = 1.
    for (let c = q + 1; c < nb; c++) {
      const cr = c * rp;
      let s = pt[cr + q];
      for (let i = q + 1; i < rp; i++) s += pt[row + i] * pt[cr + i];
      if (s === 0) continue;
      s *= tq;
      pt[cr + q] -= s;
      for (let i = q + 1; i < rp; i++) pt[cr + i] -= s * pt[row + i];
    }
  }
}

/** Upper-triangular T (kk×kk, row-major) with H_0 H_1 ⋯ H_{kk-1} = I − V T Vᵀ (LAPACK dlarft). */
function formT(vt: Float32Array, kk: number, rp: number, tau: Float64Array): Float32Array {
  const t = new Float64Array(kk * kk);
  const z = new Float64Array(kk);
  for (let j = 0; j < kk; j++) {
    const tj = tau[j];
    t[j * kk + j] = tj;
    if (tj === 0) continue;
    const vj = j * rp;
    // z[i] = v_iᵀ v_j for i < j (overlap starts at j where v_j[j] = 1).
    for (let i = 0; i < j; i++) {
      const vi = i * rp;
      let s = 0;
      for (let p = j; p < rp; p++) s += vt[vi + p] * vt[vj + p];
      z[i] = s;
    }
    // T[0:j, j] = −τ_j T[0:j, 0:j] z
    for (let i = 0; i < j; i++) {
      let s = 0;
      for (let p = i; p < j; p++) s += t[i * kk + p] * z[p];
      t[i * kk + j] = -tj * s;
    }
  }
  return Float32Array.from(t);
}
