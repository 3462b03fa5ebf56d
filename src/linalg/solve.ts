/**
 * Normal equations: (G + jitter) X = B for a symmetric positive semi-definite n×n G (n up to a few
 * thousand) and n×m right-hand sides, in float64 JS. Cholesky in place, row-major, rows contiguous.
 * Used by data reconstruction's exact solves and Scheme 1's alternating least squares.
 */

/** Cholesky G = LLᵀ in place (lower triangle of `a`, row-major); false if a pivot is not positive. */
function choleskyInPlace(a: Float64Array, n: number): boolean {
  for (let j = 0; j < n; j++) {
    const rj = j * n;
    let d = a[rj + j];
    for (let p = 0; p < j; p++) d -= a[rj + p] * a[rj + p];
    if (!(d > 0)) return false;
    const ljj = Math.sqrt(d);
    a[rj + j] = ljj;
    const inv = 1 / ljj;
    for (let i = j + 1; i < n; i++) {
      const ri = i * n;
      let s = a[ri + j];
      for (let p = 0; p < j; p++) s -= a[ri + p] * a[rj + p];
      a[ri + j] = s * inv;
    }
  }
  return true;
}

/**
 * Solves (G + δI) X = B, G symmetric n×n (row-major, not modified), B n×m row-major. δ starts at
 * `ridge`·mean(diag G) and grows tenfold until the factorization succeeds (G is only semi-definite
 * when some inputs never vary, e.g. a dead channel).
 */
export function solveSymmetric(g: Float64Array, b: Float64Array, n: number, m: number, ridge = 1e-7): Float64Array {
  let trace = 0;
  for (let i = 0; i < n; i++) trace += g[i * n + i];
  const scale = trace > 0 ? trace / n : 1;
  const l = new Float64Array(n * n);
  let jitter = ridge * scale;
  for (let attempt = 0; ; attempt++) {
    l.set(g);
    for (let i = 0; i < n; i++) l[i * n + i] += jitter;
    if (choleskyInPlace(l, n)) break;
    if (attempt > 12) throw new Error('normal equations are not positive definite');
    jitter *= 10;
  }
  // Forward substitution L Y = B, then back substitution Lᵀ X = Y, all m columns at once.
  const x = Float64Array.from(b.subarray(0, n * m));
  for (let i = 0; i < n; i++) {
    const ri = i * n;
    const xi = i * m;
    for (let p = 0; p < i; p++) {
      const lip = l[ri + p];
      if (lip === 0) continue;
      const xp = p * m;
      for (let c = 0; c < m; c++) x[xi + c] -= lip * x[xp + c];
    }
    const inv = 1 / l[ri + i];
    for (let c = 0; c < m; c++) x[xi + c] *= inv;
  }
  for (let i = n - 1; i >= 0; i--) {
    const xi = i * m;
    for (let p = i + 1; p < n; p++) {
      const lpi = l[p * n + i];
      if (lpi === 0) continue;
      const xp = p * m;
      for (let c = 0; c < m; c++) x[xi + c] -= lpi * x[xp + c];
    }
    const inv = 1 / l[i * n + i];
    for (let c = 0; c < m; c++) x[xi + c] *= inv;
  }
  return x;
}
