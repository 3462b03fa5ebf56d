/**
 * Normal equations: (G + jitter) X = B for a symmetric positive semi-definite n×n G (n up to a few
 * thousand) and n×m right-hand sides, in float64 JS. Cholesky in place, row-major, rows contiguous.
 * Used by data reconstruction's exact solves and Scheme 1's alternating least squares.
 */

/** Σ_{p<len} a[i+p]·a[j+p], in four independent partial sums (V8 runs them ~2× faster than one chain). */
function dot(a: Float64Array, i: number, j: number, len: number): number {
  let s0 = 0;
  let s1 = 0;
  let s2 = 0;
  let s3 = 0;
  let p = 0;
  for (; p + 3 < len; p += 4) {
    s0 += a[i + p] * a[j + p];
    s1 += a[i + p + 1] * a[j + p + 1];
    s2 += a[i + p + 2] * a[j + p + 2];
    s3 += a[i + p + 3] * a[j + p + 3];
  }
  for (; p < len; p++) s0 += a[i + p] * a[j + p];
  return s0 + s1 + (s2 + s3);
}

/**
 * a[ri + j…j+1] and a[ri + n + j…j+1] (rows i, i+1; columns j, j+1) minus the dot products of
 * those rows' and columns' first `len` entries (rows rj and rj + n): four sums from four loads
 * per step instead of eight, the cost that dominates large factorizations.
 */
function subtractDots2x2(a: Float64Array, ri: number, rj: number, n: number, j: number, len: number): void {
  const ri1 = ri + n;
  const rj1 = rj + n;
  let s00 = 0;
  let s01 = 0;
  let s10 = 0;
  let s11 = 0;
  for (let p = 0; p < len; p++) {
    const x0 = a[ri + p];
    const x1 = a[ri1 + p];
    const y0 = a[rj + p];
    const y1 = a[rj1 + p];
    s00 += x0 * y0;
    s01 += x0 * y1;
    s10 += x1 * y0;
    s11 += x1 * y1;
  }
  a[ri + j] -= s00;
  a[ri + j + 1] -= s01;
  a[ri1 + j] -= s10;
  a[ri1 + j + 1] -= s11;
}

/** Columns factored together: their rows' prefixes stay in cache while every later row streams past once. */
const CHOLESKY_BLOCK = 24; // even: see choleskyInPlace

/**
 * Cholesky G = LLᵀ in place (lower triangle of `a`, row-major); false if a pivot is not positive.
 * Blocked by columns: for each block, every later row first subtracts the columns before the block
 * (dot products with the block's rows, read once per block instead of once per column: the data
 * fit's 2,214-dimensional systems do not fit in cache; 1.3–1.8× faster than column by column), then
 * the block is factored on its own. Below the block the sums go two rows by two columns at a time
 * (`subtractDots2x2`: 1.4–2× faster again at 2,214 dimensions).
 */
function choleskyInPlace(a: Float64Array, n: number): boolean {
  for (let j0 = 0; j0 < n; j0 += CHOLESKY_BLOCK) {
    const j1 = Math.min(n, j0 + CHOLESKY_BLOCK);
    for (let i = j0; i < j1; i++) {
      const ri = i * n;
      for (let j = j0; j <= i; j++) a[ri + j] -= dot(a, ri, j * n, j0);
    }
    // Below the block, two rows by two columns at a time (the block is an even number of columns
    // wide; only the last one can be narrower, and it has no rows below it).
    let i = j1;
    for (; i + 1 < n; i += 2) for (let j = j0; j < j1; j += 2) subtractDots2x2(a, i * n, j * n, n, j, j0);
    if (i < n) for (let j = j0; j < j1; j++) a[i * n + j] -= dot(a, i * n, j * n, j0);
    for (let j = j0; j < j1; j++) {
      const rj = j * n;
      const d = a[rj + j] - dot(a, rj + j0, rj + j0, j - j0);
      if (!(d > 0)) return false;
      const ljj = Math.sqrt(d);
      a[rj + j] = ljj;
      const inv = 1 / ljj;
      for (let i = j + 1; i < n; i++) {
        const ri = i * n;
        a[ri + j] = (a[ri + j] - dot(a, ri + j0, rj + j0, j - j0)) * inv;
      }
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
