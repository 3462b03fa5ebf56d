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

/**
 * Gram matrix of the rows: X·Xᵀ for the row-major r×t matrix X (symmetric r×r). Register-tiled
 * 4×2 (eight dot products per pass over t): ≈ 2 G multiply-adds/s in V8 vs < 1 untiled.
 */
export function rowGramF64(x: ArrayLike<number>, r: number, t: number): Float64Array {
  const v = x instanceof Float64Array ? x : Float64Array.from(x as ArrayLike<number>);
  const g = new Float64Array(r * r);
  for (let i0 = 0; i0 < r; i0 += 4) {
    const i1 = Math.min(r, i0 + 4);
    for (let j0 = 0; j0 < i1; j0 += 2) {
      const j1 = Math.min(r, j0 + 2);
      if (i1 - i0 === 4 && j1 - j0 === 2) {
        const a0 = i0 * t;
        const a1 = a0 + t;
        const a2 = a1 + t;
        const a3 = a2 + t;
        const b0 = j0 * t;
        const b1 = b0 + t;
        let s00 = 0;
        let s01 = 0;
        let s10 = 0;
        let s11 = 0;
        let s20 = 0;
        let s21 = 0;
        let s30 = 0;
        let s31 = 0;
        for (let p = 0; p < t; p++) {
          const y0 = v[b0 + p];
          const y1 = v[b1 + p];
          const x0 = v[a0 + p];
          const x1 = v[a1 + p];
          const x2 = v[a2 + p];
          const x3 = v[a3 + p];
          s00 += x0 * y0;
          s01 += x0 * y1;
          s10 += x1 * y0;
          s11 += x1 * y1;
          s20 += x2 * y0;
          s21 += x2 * y1;
          s30 += x3 * y0;
          s31 += x3 * y1;
        }
        const r0 = i0 * r + j0;
        g[r0] = s00;
        g[r0 + 1] = s01;
        g[r0 + r] = s10;
        g[r0 + r + 1] = s11;
        g[r0 + 2 * r] = s20;
        g[r0 + 2 * r + 1] = s21;
        g[r0 + 3 * r] = s30;
        g[r0 + 3 * r + 1] = s31;
      } else {
        for (let i = i0; i < i1; i++) {
          for (let j = j0; j < j1; j++) {
            let acc = 0;
            const xi = i * t;
            const xj = j * t;
            for (let p = 0; p < t; p++) acc += v[xi + p] * v[xj + p];
            g[i * r + j] = acc;
          }
        }
      }
    }
  }
  // Tiles on the diagonal also filled some upper entries; mirror the lower triangle over them.
  for (let i = 0; i < r; i++) for (let j = 0; j < i; j++) g[j * r + i] = g[i * r + j];
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
