/**
 * Reshapings of a tfjs conv kernel (layout [kh, kw, C, N], row-major) into the matrices whose
 * low-rank approximations the schemes need.
 */

export interface KernelDims {
  kh: number;
  kw: number;
  C: number;
  N: number;
}

/**
 * Scheme 2's matrix: rows (c, i) = C·kh, columns (j, n) = kw·N, so that a rank-K factorization
 * U·Vᵀ is exactly a kh×1 conv with K filters (from U) followed by a 1×kw conv (from V).
 */
export function scheme2Matrix(kernel: Float32Array, d: KernelDims): Float32Array {
  const { kh, kw, C, N } = d;
  const cols = kw * N;
  const out = new Float32Array(C * kh * cols);
  for (let i = 0; i < kh; i++) {
    for (let j = 0; j < kw; j++) {
      for (let c = 0; c < C; c++) {
        const src = ((i * kw + j) * C + c) * N;
        const dst = (c * kh + i) * cols + j * N;
        for (let n = 0; n < N; n++) out[dst + n] = kernel[src + n];
      }
    }
  }
  return out;
}

/** Inverse of scheme2Matrix. */
export function kernelFromScheme2Matrix(matrix: Float32Array, d: KernelDims): Float32Array {
  const { kh, kw, C, N } = d;
  const cols = kw * N;
  const out = new Float32Array(kh * kw * C * N);
  for (let i = 0; i < kh; i++) {
    for (let j = 0; j < kw; j++) {
      for (let c = 0; c < C; c++) {
        const dst = ((i * kw + j) * C + c) * N;
        const src = (c * kh + i) * cols + j * N;
        for (let n = 0; n < N; n++) out[dst + n] = matrix[src + n];
      }
    }
  }
  return out;
}

/** Smallest rank keeping at least `fraction` of Σσ² (given σ² descending). */
export function energyRank(sigma2: ArrayLike<number>, fraction: number): number {
  let total = 0;
  for (let i = 0; i < sigma2.length; i++) total += sigma2[i];
  if (total === 0) return 0;
  let kept = 0;
  for (let i = 0; i < sigma2.length; i++) {
    kept += sigma2[i];
    if (kept >= fraction * total * (1 - 1e-12)) return i + 1;
  }
  return sigma2.length;
}

/** ‖a − b‖_F / ‖a‖_F. */
export function relativeError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    const d = a[i] - b[i];
    num += d * d;
    den += a[i] * a[i];
  }
  return den === 0 ? 0 : Math.sqrt(num / den);
}
