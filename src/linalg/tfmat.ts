// Small helpers around tfjs matrices. All matrices are row-major 2-D float32 tensors on the active
// backend. Note: on the wasm backend tf.matMul with transposeA/transposeB set is an order of
// magnitude slower than the plain product (no XNNPACK path), so callers transpose explicitly.
import * as tf from '@tensorflow/tfjs';

/** Synchronously reads a tensor's values (a copy) and disposes the tensor. */
export function readAndDispose(t: tf.Tensor): Float32Array {
  const d = t.dataSync() as Float32Array;
  t.dispose();
  return d;
}

/** Row-major transpose of a rows×cols matrix (cache-blocked). */
export function transposeF32(a: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(rows * cols);
  const B = 32;
  for (let r0 = 0; r0 < rows; r0 += B) {
    const r1 = Math.min(rows, r0 + B);
    for (let c0 = 0; c0 < cols; c0 += B) {
      const c1 = Math.min(cols, c0 + B);
      for (let r = r0; r < r1; r++) {
        const src = r * cols;
        for (let c = c0; c < c1; c++) out[c * rows + r] = a[src + c];
      }
    }
  }
  return out;
}

/** Gram matrix of the smaller side: A·Aᵀ (m ≤ n) or Aᵀ·A (m > n), as a float32 tensor. */
export function gramTensor(a: Float32Array, m: number, n: number): tf.Tensor2D {
  const at = transposeF32(a, m, n);
  return tf.tidy(() => {
    const ta = tf.tensor2d(a.length === m * n ? a : a.subarray(0, m * n), [m, n]);
    const tat = tf.tensor2d(at, [n, m]);
    return m <= n ? tf.matMul(ta, tat) : tf.matMul(tat, ta);
  });
}
