// Symmetric band → tridiagonal reduction by Householder bulge chasing (Lang's algorithm, the
// second stage of LAPACK's two-stage dsytrd_2stage / dsb2st), eigenvalues only.
//
// Storage: lower band, column-major: element (i, j), i ≥ j, i − j ≤ ld − 1 lives at
// ab[j*ld + (i − j)]. `ld` must be ≥ 2b so the transient bulges (which reach 2b − 1 below the
// diagonal) fit. Cost ≈ 6·b·n² flops, all on b×b blocks that stay in L1/L2.

/** Allocates a zeroed lower-band buffer with room for bulges of a bandwidth-b matrix. */
export function allocBand(n: number, b: number): { ab: Float64Array; ld: number } {
  const ld = 2 * b + 1;
  return { ab: new Float64Array(n * ld), ld };
}

/**
 * Reduces the symmetric band matrix (bandwidth b, lower storage, see above) to tridiagonal form in
 * place and returns its diagonal d and sub-diagonal e (e[i] couples i and i+1, e[n-1] = 0).
 */
export function bandToTridiagonal(ab: Float64Array, n: number, b: number, ld: number): { d: Float64Array; e: Float64Array } {
  if (ld < 2 * b) throw new Error('bandToTridiagonal: ld must be at least 2b');
  const v = new Float64Array(b + 1);
  const v2 = new Float64Array(b + 1);
  const y = new Float64Array(b + 1);
  if (b > 1) {
    for (let i = 0; i < n - 2; i++) {
      // Step 0: annihilate A[i+2 .. i+len, i].
      const r0 = i + 1;
      const len = Math.min(b, n - r0);
      if (len < 2) continue;
      let tau = makeReflector(ab, i * ld + 1, len, v);
      if (tau === 0) continue;
      applyTwoSided(ab, ld, r0, len, v, tau, y);
      let cur = r0;
      let clen = len;
      let vc = v;
      let vn = v2;
      for (;;) {
        const nxt = cur + clen;
        const h = Math.min(b, n - nxt);
        if (h <= 0) break;
        // Block B = A[nxt .. nxt+h-1, cur .. cur+clen-1]; B[p][q] = ab[(cur+q)*ld + (nxt+p) − (cur+q)].
        // B ← B·H  (H = I − τ v vᵀ acting on columns): y = B v, B −= τ y vᵀ.
        y.fill(0, 0, h);
        for (let q = 0; q < clen; q++) {
          const vq = vc[q];
          if (vq === 0) continue;
          const col = (cur + q) * ld + (nxt - cur - q);
          for (let p = 0; p < h; p++) y[p] += ab[col + p] * vq;
        }
        for (let q = 0; q < clen; q++) {
          const f = tau * vc[q];
          if (f === 0) continue;
          const col = (cur + q) * ld + (nxt - cur - q);
          for (let p = 0; p < h; p++) ab[col + p] -= f * y[p];
        }
        if (h < 2) break;
        // New reflector from B's first column (rows nxt .. nxt+h-1 of column cur).
        const tau2 = makeReflector(ab, cur * ld + (nxt - cur), h, vn);
        if (tau2 === 0) break;
        // Left-apply to B's remaining columns: B[:, q] −= τ2 v2 (v2ᵀ B[:, q]).
        for (let q = 1; q < clen; q++) {
          const col = (cur + q) * ld + (nxt - cur - q);
          let s = 0;
          for (let p = 0; p < h; p++) s += vn[p] * ab[col + p];
          if (s === 0) continue;
          s *= tau2;
          for (let p = 0; p < h; p++) ab[col + p] -= s * vn[p];
        }
        applyTwoSided(ab, ld, nxt, h, vn, tau2, y);
        const t = vc;
        vc = vn;
        vn = t;
        tau = tau2;
        cur = nxt;
        clen = h;
      }
    }
  }
  const d = new Float64Array(n);
  const e = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    d[i] = ab[i * ld];
    if (i + 1 < n) e[i] = ab[i * ld + 1];
  }
  return { d, e };
}

/**
 * Householder reflector for the contiguous vector x = ab[off .. off+len): on exit ab[off] = β,
 * ab[off+1 ..] = 0, v (v[0] = 1) and the returned τ satisfy (I − τ v vᵀ) x = β e₁.
 */
function makeReflector(ab: Float64Array, off: number, len: number, v: Float64Array): number {
  const alpha = ab[off];
  let xn2 = 0;
  for (let p = 1; p < len; p++) {
    const x = ab[off + p];
    xn2 += x * x;
  }
  if (xn2 === 0) return 0;
  const nrm = Math.sqrt(alpha * alpha + xn2);
  const beta = alpha >= 0 ? -nrm : nrm;
  const scale = 1 / (alpha - beta);
  v[0] = 1;
  for (let p = 1; p < len; p++) {
    v[p] = ab[off + p] * scale;
    ab[off + p] = 0;
  }
  ab[off] = beta;
  return (beta - alpha) / beta;
}

/** D ← H D H for the symmetric diagonal block D = A[r .. r+L-1, same] (lower band storage). */
function applyTwoSided(ab: Float64Array, ld: number, r: number, L: number, v: Float64Array, tau: number, y: Float64Array): void {
  // y = D v (symmetric, lower part stored column-major).
  y.fill(0, 0, L);
  for (let q = 0; q < L; q++) {
    const col = (r + q) * ld; // ab[col + (p − q)] = D[p][q]
    const vq = v[q];
    let s = ab[col] * vq;
    for (let p = q + 1; p < L; p++) {
      const a = ab[col + p - q];
      s += a * v[p];
      y[p] += a * vq;
    }
    y[q] += s;
  }
  // w = τ y − (τ²/2)(yᵀv) v
  let yv = 0;
  for (let p = 0; p < L; p++) yv += y[p] * v[p];
  const c = 0.5 * tau * tau * yv;
  for (let p = 0; p < L; p++) y[p] = tau * y[p] - c * v[p];
  // D −= v wᵀ + w vᵀ (lower part)
  for (let q = 0; q < L; q++) {
    const col = (r + q) * ld - q;
    const vq = v[q];
    const wq = y[q];
    for (let p = q; p < L; p++) ab[col + p] -= v[p] * wq + y[p] * vq;
  }
}
