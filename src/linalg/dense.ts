// Plain-JS float64 kernels for the small products where float64 accuracy matters more than speed
// (≈ 0.5–1 GFLOP/s; callers switch to the tfjs backend above a few 1e7 multiply-adds).

/** Row-major product C = A·B, A m×p, B p×n (inputs of any numeric array type). */
export function matmulF64(a: ArrayLike<number>, b: ArrayLike<number>, m: number, p: number, n: number): Float64Array {
  const b64 = b instanceof Float64Array ? b : Float64Array.from(b as ArrayLike<number>);
  const c = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    const ci = i * n;
    const ai = i * p;
    for (let q = 0; q < p; q++) {
      const x = a[ai + q];
      if (x === 0) continue;
      const bq = q * n;
      for (let j = 0; j < n; j++) c[ci + j] += x * b64[bq + j];
    }
  }
  return c;
}

/** Row-major Aᵀ·B for A p×m, B p×n (result m×n). */
export function matmulTransAF64(a: ArrayLike<number>, b: ArrayLike<number>, p: number, m: number, n: number): Float64Array {
  const b64 = b instanceof Float64Array ? b : Float64Array.from(b as ArrayLike<number>);
  const c = new Float64Array(m * n);
  for (let q = 0; q < p; q++) {
    const aq = q * m;
    const bq = q * n;
    for (let i = 0; i < m; i++) {
      const x = a[aq + i];
      if (x === 0) continue;
      const ci = i * n;
      for (let j = 0; j < n; j++) c[ci + j] += x * b64[bq + j];
    }
  }
  return c;
}

/** Gram matrix of the rows: X·Xᵀ for the row-major r×t matrix X (symmetric r×r). */
export function rowGramF64(x: ArrayLike<number>, r: number, t: number): Float64Array {
  const x64 = x instanceof Float64Array ? x : Float64Array.from(x as ArrayLike<number>);
  const g = new Float64Array(r * r);
  for (let i = 0; i < r; i++) {
    const xi = i * t;
    for (let j = 0; j <= i; j++) {
      const xj = j * t;
      let s0 = 0;
      let s1 = 0;
      let p = 0;
      for (; p + 1 < t; p += 2) {
        s0 += x64[xi + p] * x64[xj + p];
        s1 += x64[xi + p + 1] * x64[xj + p + 1];
      }
      if (p < t) s0 += x64[xi + p] * x64[xj + p];
      const s = s0 + s1;
      g[i * r + j] = s;
      g[j * r + i] = s;
    }
  }
  return g;
}

/**
 * Orthonormalises the columns of the row-major rows×k matrix x in place (float64 modified
 * Gram–Schmidt, two passes). Columns that vanish are replaced using `fill` (a generator of
 * random numbers) before re-orthogonalisation.
 */
export function orthonormalizeColumnsF64(x: Float64Array, rows: number, k: number, fill: () => number): void {
  // Work on the transpose so each column is contiguous.
  const xt = new Float64Array(k * rows);
  for (let i = 0; i < rows; i++) for (let j = 0; j < k; j++) xt[j * rows + i] = x[i * k + j];
  for (let j = 0; j < k; j++) {
    const cj = j * rows;
    let orig = 0;
    for (let i = 0; i < rows; i++) orig += xt[cj + i] * xt[cj + i];
    for (let attempt = 0; ; attempt++) {
      for (let pass = 0; pass < 2; pass++) {
        for (let p = 0; p < j; p++) {
          const cp = p * rows;
          let d = 0;
          for (let i = 0; i < rows; i++) d += xt[cp + i] * xt[cj + i];
          if (d === 0) continue;
          for (let i = 0; i < rows; i++) xt[cj + i] -= d * xt[cp + i];
        }
      }
      let nr = 0;
      for (let i = 0; i < rows; i++) nr += xt[cj + i] * xt[cj + i];
      if (nr > 1e-20 * orig && nr > 0) {
        const inv = 1 / Math.sqrt(nr);
        for (let i = 0; i < rows; i++) xt[cj + i] *= inv;
        break;
      }
      if (attempt > 3) throw new Error('orthonormalizeColumnsF64: cannot complete basis');
      orig = 0;
      for (let i = 0; i < rows; i++) {
        const r = fill();
        xt[cj + i] = r;
        orig += r * r;
      }
    }
  }
  for (let i = 0; i < rows; i++) for (let j = 0; j < k; j++) x[i * k + j] = xt[j * rows + i];
}
