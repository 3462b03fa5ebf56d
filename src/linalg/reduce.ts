// Stage 1 of a two-stage symmetric eigensolver: dense → band (bandwidth b) by blocked Householder
// panels, with the O(n³) two-sided trailing updates done as tf.matMul on the active backend.
//
// For every panel of b columns: QR of the panel (JS, float64) gives Q = I − V T Vᵀ, and the
// trailing matrix becomes Qᵀ A Q = A − W Vᵀ − V Wᵀ with X = A V T, W = X − ½ V (Tᵀ Vᵀ X)
// (an r×r·r×b product per panel and an r×2s·2s×r update per group of panels, ≈ 2n³ flops).
// tf.slice on the wasm backend copies its whole input first, so slicing once per group matters.
import * as tf from '@tensorflow/tfjs';
import { allocBand } from './band.js';
import { reflectorBlockT } from './householder.js';
import { readAndDispose } from './tfmat.js';

/** Panels per trailing update: the update becomes one rank-2·PANELS·b product (better XNNPACK
 *  efficiency than rank 2b) and the trailing matrix is sliced/rewritten 1/PANELS as often. */
const PANELS = 8;

/**
 * Reduces the symmetric n×n float32 tensor `g` (not disposed) to a band matrix with bandwidth b,
 * returned in the lower band storage of band.ts (ld = 2b + 1, room for bulge chasing).
 *
 * Two-level blocking (as LAPACK's latrd does for one-stage tridiagonalisation): within a group of
 * PANELS panels the trailing matrix A is not updated; panel p works with
 * A_p = A − W_acc V_accᵀ − V_acc W_accᵀ (the group's earlier panels) applied implicitly through
 * skinny products, and the group's update is applied once at the end.
 */
export function denseToBand(g: tf.Tensor2D, n: number, b: number): { ab: Float64Array; ld: number } {
  const { ab, ld } = allocBand(n, b);
  let a: tf.Tensor2D = g;
  let c0 = 0; // global index of the current trailing matrix's first row/column
  try {
    while (c0 < n) {
      const r = n - c0;
      const span = Math.min(PANELS * b, r);
      const topRows = readAndDispose(r === span ? a.clone() : a.slice([0, 0], [span, r])); // rows 0..span of A
      // Group accumulators: column j of W_acc/V_acc (r rows, zero above its panel's trailing start).
      const sMax = span;
      const wa = new Float32Array(r * sMax);
      const va = new Float32Array(r * sMax);
      const wat = new Float32Array(sMax * r);
      const vat = new Float32Array(sMax * r);
      let s = 0;
      let o = 0; // local offset of the current panel
      let finished = false;
      while (o < span) {
        const w = Math.min(b, r - o);
        const t = o + w; // first row of the panel's trailing part
        const rp = r - t;
        // Current columns o..o+w of A_p, rows o..r (from the symmetric top rows, corrected).
        const cols = new Float64Array((r - o) * w); // row-major (r−o)×w
        for (let i = o; i < r; i++) for (let j = 0; j < w; j++) cols[(i - o) * w + j] = topRows[(o + j) * r + i];
        if (s > 0) {
          const corr = pendingColumns(wa, va, r, sMax, o, w);
          for (let i = o; i < r; i++) for (let j = 0; j < w; j++) cols[(i - o) * w + j] -= corr[i * w + j];
        }
        for (let q = 0; q < w; q++) for (let p = q; p < w; p++) ab[(c0 + o + q) * ld + (p - q)] = cols[p * w + q];
        if (rp === 0) {
          finished = true;
          break;
        }
        const kk = Math.min(w, rp);
        const pt = new Float64Array(w * rp);
        for (let q = 0; q < w; q++) for (let i = 0; i < rp; i++) pt[q * rp + i] = cols[(w + i) * w + q];
        const tau = new Float64Array(kk);
        panelQR(pt, w, rp, kk, tau);
        for (let q = 0; q < w; q++) {
          const pmax = Math.min(q, kk - 1);
          for (let p = 0; p <= pmax; p++) ab[(c0 + o + q) * ld + (w + p - q)] = pt[q * rp + p];
        }
        // V padded to r rows (zeros above t), and Vᵀ.
        const vPad = new Float32Array(r * kk);
        const vtPad = new Float32Array(kk * r);
        for (let q = 0; q < kk; q++) {
          const row = q * rp;
          vPad[(t + q) * kk + q] = 1;
          vtPad[q * r + t + q] = 1;
          for (let i = q + 1; i < rp; i++) {
            const x = pt[row + i];
            vPad[(t + i) * kk + q] = x;
            vtPad[q * r + t + i] = x;
          }
        }
        // (float64 copy: keeps reflectorBlockT monomorphic, which the 64-wide blocks of applyReflectors need)
        const tm = reflectorBlockT(Float64Array.from(vtPad), r, tau, Int32Array.from({ length: kk }, (_, q) => t + q), 0, kk);
        const wPad = computeW(a, wa, va, wat, vat, r, sMax, s, vPad, vtPad, tm, kk, t);
        for (let i = t; i < r; i++) {
          for (let j = 0; j < kk; j++) {
            const wv = wPad[i * kk + j];
            const vv = vPad[i * kk + j];
            wa[i * sMax + s + j] = wv;
            va[i * sMax + s + j] = vv;
            wat[(s + j) * r + i] = wv;
            vat[(s + j) * r + i] = vv;
          }
        }
        s += kk;
        o = t;
      }
      if (finished) break;
      // Apply the group's update to the trailing part beyond o: A ← A[o:, o:] − [W V]·[V W]ᵀ.
      const r2 = r - o;
      const left = new Float32Array(r2 * 2 * s);
      const right = new Float32Array(2 * s * r2);
      for (let i = 0; i < r2; i++) {
        const src = (o + i) * sMax;
        const dst = i * 2 * s;
        for (let j = 0; j < s; j++) {
          left[dst + j] = wa[src + j];
          left[dst + s + j] = va[src + j];
        }
      }
      for (let j = 0; j < s; j++) {
        right.set(vat.subarray(j * r + o, (j + 1) * r), j * r2);
        right.set(wat.subarray(j * r + o, (j + 1) * r), (s + j) * r2);
      }
      const prev = a;
      a = tf.tidy(() => tf.sub(prev.slice([o, o], [r2, r2]), tf.matMul(tf.tensor2d(left, [r2, 2 * s]), tf.tensor2d(right, [2 * s, r2]))) as tf.Tensor2D);
      if (prev !== g) prev.dispose();
      c0 += o;
    }
  } finally {
    if (a !== g) a.dispose();
  }
  return { ab, ld };
}

/**
 * W_acc V_accᵀ + V_acc W_accᵀ restricted to columns o..o+w−1 (all r rows, row-major r×w): the
 * part of the pending group update that the next panel's columns need.
 */
function pendingColumns(wa: Float32Array, va: Float32Array, r: number, sMax: number, o: number, w: number): Float32Array {
  // V_acc[cols]ᵀ and W_acc[cols]ᵀ (sMax×w) from rows o..o+w of the accumulators.
  const vc = new Float32Array(sMax * w);
  const wc = new Float32Array(sMax * w);
  for (let c = 0; c < w; c++) {
    for (let j = 0; j < sMax; j++) {
      vc[j * w + c] = va[(o + c) * sMax + j];
      wc[j * w + c] = wa[(o + c) * sMax + j];
    }
  }
  return readAndDispose(
    tf.tidy(() =>
      tf.add(
        tf.matMul(tf.tensor2d(wa, [r, sMax]), tf.tensor2d(vc, [sMax, w])),
        tf.matMul(tf.tensor2d(va, [r, sMax]), tf.tensor2d(wc, [sMax, w])),
      ),
    ),
  );
}

/**
 * W = X − ½ V (Tᵀ Vᵀ X) with X = A_p V T, where A_p = A − W_acc V_accᵀ − V_acc W_accᵀ is applied
 * implicitly: A_p V = A V − W_acc (V_accᵀ V) − V_acc (W_accᵀ V). Returns W padded to r rows.
 */
function computeW(
  a: tf.Tensor2D,
  wa: Float32Array,
  va: Float32Array,
  wat: Float32Array,
  vat: Float32Array,
  r: number,
  sMax: number,
  s: number,
  vPad: Float32Array,
  vtPad: Float32Array,
  tm: Float32Array,
  kk: number,
  t: number,
): Float32Array {
  const w = readAndDispose(
    tf.tidy(() => {
      const v = tf.tensor2d(vPad, [r, kk]);
      const vt = tf.tensor2d(vtPad, [kk, r]);
      const tt = tf.tensor2d(tm, [kk, kk]);
      let av = tf.matMul(a, v);
      if (s > 0) {
        const corr = tf.add(
          tf.matMul(tf.tensor2d(wa, [r, sMax]), tf.matMul(tf.tensor2d(vat, [sMax, r]), v)),
          tf.matMul(tf.tensor2d(va, [r, sMax]), tf.matMul(tf.tensor2d(wat, [sMax, r]), v)),
        );
        av = tf.sub(av, corr);
      }
      const x = tf.matMul(av, tt); // A_p V T (rows < t are not used: V is zero there)
      const m = tf.matMul(tf.transpose(tt), tf.matMul(vt, x)); // Tᵀ Vᵀ X
      return tf.sub(x, tf.mul(tf.matMul(v, m), 0.5));
    }),
  );
  // Rows above t are not part of the trailing block.
  w.fill(0, 0, t * kk);
  return w;
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
