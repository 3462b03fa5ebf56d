/**
 * Scheme 2 math (pure): a kh×kw conv C→N becomes a kh×1 conv C→K followed by a 1×kw conv K→N.
 * The rank-K truncated SVD of the kernel reshaped to (C·kh)×(kw·N) is the exact optimum of the
 * filter-reconstruction objective (Tai et al. 2016); √σ goes to each side so both factors have
 * comparable scale (better conditioned for data reconstruction and float32 storage).
 */
import * as tf from '@tensorflow/tfjs';
import { truncatedSvd } from '../linalg/svd.js';
import { kernelFromScheme2Matrix, scheme2Matrix, type KernelDims } from './reshape.js';

export interface Scheme2Factors {
  rank: number;
  /** Vertical kernel, tfjs layout [kh, 1, C, K]. */
  vertical: Float32Array;
  /** Horizontal kernel, tfjs layout [1, kw, K, N]. */
  horizontal: Float32Array;
}

export function scheme2Factorize(kernel: Float32Array, d: KernelDims, rank: number): Scheme2Factors {
  const { kh, kw, C, N } = d;
  const rows = C * kh;
  const cols = kw * N;
  const { u, s, v } = truncatedSvd(scheme2Matrix(kernel, d), rows, cols, rank);
  const vertical = new Float32Array(kh * C * rank);
  const horizontal = new Float32Array(kw * rank * N);
  for (let k = 0; k < rank; k++) {
    const root = Math.sqrt(Math.max(s[k], 0));
    for (let c = 0; c < C; c++) {
      for (let i = 0; i < kh; i++) vertical[(i * C + c) * rank + k] = u[(c * kh + i) * rank + k] * root;
    }
    for (let j = 0; j < kw; j++) {
      for (let n = 0; n < N; n++) horizontal[(j * rank + k) * N + n] = v[(j * N + n) * rank + k] * root;
    }
  }
  return { rank, vertical, horizontal };
}

/** The kh×kw kernel [kh, kw, C, N] that the vertical/horizontal pair computes (a matMul on the backend). */
export function scheme2Kernel(f: Scheme2Factors, d: KernelDims): Float32Array {
  const { kh, kw, C, N } = d;
  const K = f.rank;
  // Vertical [kh,1,C,K] → rows (c,i); horizontal [1,kw,K,N] → rows (j,n).
  const matrix = tf.tidy(() => {
    const u = tf.tensor4d(f.vertical, [kh, 1, C, K]).transpose([2, 0, 1, 3]).reshape([C * kh, K]);
    const v = tf.tensor4d(f.horizontal, [1, kw, K, N]).transpose([1, 3, 0, 2]).reshape([kw * N, K]);
    return tf.matMul(u, v, false, true);
  });
  const data = matrix.dataSync() as Float32Array;
  matrix.dispose();
  return kernelFromScheme2Matrix(data, d);
}
