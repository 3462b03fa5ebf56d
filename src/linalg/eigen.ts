// Dense symmetric eigensolver in float64 (plain JS), for small matrices (n up to a few hundred).
//
// Householder tridiagonalisation (lower triangle, row-major, LAPACK dsytd2 style) followed by the
// implicit QL algorithm with Wilkinson shifts (EISPACK tql1/tql2). Everything is laid out so that
// the O(n^3) inner loops walk contiguous memory: the symmetric mat-vec reads the lower triangle by
// rows, and the eigenvector matrix is kept transposed (one eigenvector per row) so that every QL
// Givens rotation combines two contiguous rows.

export interface SymmetricEigenResult {
  /** Eigenvalues, sorted in descending order. */
  values: Float64Array;
  /** Row-major n×n, vectors[i*n + j] = component i of eigenvector j; null unless requested. */
  vectors: Float64Array | null;
}

/**
 * Eigen-decomposition of the symmetric n×n row-major matrix `a` (only symmetric input makes sense;
 * the two triangles are averaged). Values are sorted descending; when `wantVectors` is set the
 * columns of `vectors` are the matching orthonormal eigenvectors.
 */
export function symmetricEigen(a: Float64Array, n: number, wantVectors: boolean): SymmetricEigenResult {
  return eigenFromTridiagonal(tridiagonalizeSymmetric(a, n), wantVectors);
}

/** Householder tridiagonal form of a symmetric matrix, reusable for values and/or vectors. */
export interface TridiagonalForm {
  n: number;
  /** Reflectors below the sub-diagonal (row-major n×n work array). */
  w: Float64Array;
  tau: Float64Array;
  d: Float64Array;
  e: Float64Array;
}

/** Stage 1 of symmetricEigen: T = QᵀAQ (the two triangles of `a` are averaged; `a` is not modified). */
export function tridiagonalizeSymmetric(a: Float64Array, n: number): TridiagonalForm {
  if (!Number.isInteger(n) || n < 0) throw new Error(`symmetricEigen: bad size ${n}`);
  if (a.length < n * n) throw new Error(`symmetricEigen: expected ${n * n} entries, got ${a.length}`);
  const w = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    const ri = i * n;
    for (let j = 0; j <= i; j++) {
      const x = 0.5 * (a[ri + j] + a[j * n + i]);
      w[ri + j] = x;
      w[j * n + i] = x;
    }
  }
  const d = new Float64Array(n);
  const e = new Float64Array(n);
  const tau = new Float64Array(n);
  if (n > 0) tridiagonalize(w, n, d, e, tau);
  return { n, w, tau, d, e };
}

/** Stage 2 of symmetricEigen: implicit QL on T (does not modify `t`); values descending. */
export function eigenFromTridiagonal(t: TridiagonalForm, wantVectors: boolean): SymmetricEigenResult {
  const n = t.n;
  if (n === 0) return { values: new Float64Array(0), vectors: wantVectors ? new Float64Array(0) : null };
  const d = Float64Array.from(t.d);
  const e = Float64Array.from(t.e);
  let z: Float64Array | null = null;
  if (wantVectors) z = accumulateQt(t.w, n, t.tau);
  tridiagonalQL(d, e, n, z);

  // Sort descending.
  const order = new Int32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  order.sort((p, q) => d[q] - d[p]);
  const values = new Float64Array(n);
  for (let j = 0; j < n; j++) values[j] = d[order[j]];
  let vectors: Float64Array | null = null;
  if (z) {
    vectors = new Float64Array(n * n);
    for (let j = 0; j < n; j++) {
      const src = order[j] * n;
      for (let i = 0; i < n; i++) vectors[i * n + j] = z[src + i];
    }
  }
  return { values, vectors };
}

/**
 * In-place Householder reduction of the symmetric row-major matrix `w` (only the lower triangle is
 * used and updated) to tridiagonal form T = Qᵀ A Q, Q = H_0 H_1 … H_{n-3}, H_k = I − τ_k v_k v_kᵀ.
 * On exit d = diag(T), e[0..n-2] = sub-diagonal, v_k is stored below the sub-diagonal in column k
 * (implicit leading 1), τ_k in tau[k].
 */
function tridiagonalize(w: Float64Array, n: number, d: Float64Array, e: Float64Array, tau: Float64Array): void {
  const v = new Float64Array(n);
  const p = new Float64Array(n);
  for (let k = 0; k < n - 2; k++) {
    const r = n - k - 1; // length of the reflector, acting on indices k+1 .. n-1
    const base = k + 1;
    // x = column k below the diagonal.
    let alpha = w[base * n + k];
    let xnorm2 = 0;
    for (let i = 1; i < r; i++) {
      const x = w[(base + i) * n + k];
      xnorm2 += x * x;
    }
    d[k] = w[k * n + k];
    if (xnorm2 === 0) {
      tau[k] = 0;
      e[k] = alpha;
      continue;
    }
    const beta = alpha >= 0 ? -Math.sqrt(alpha * alpha + xnorm2) : Math.sqrt(alpha * alpha + xnorm2);
    const t = (beta - alpha) / beta;
    const scale = 1 / (alpha - beta);
    tau[k] = t;
    e[k] = beta;
    v[0] = 1;
    w[base * n + k] = 1;
    for (let i = 1; i < r; i++) {
      const idx = (base + i) * n + k;
      const x = w[idx] * scale;
      w[idx] = x;
      v[i] = x;
    }
    // p = τ · A22 · v using the lower triangle only (each element read once, used twice).
    p.fill(0, 0, r);
    for (let i = 0; i < r; i++) {
      const row = (base + i) * n + base;
      const vi = v[i];
      let s = 0;
      for (let j = 0; j < i; j++) {
        const aij = w[row + j];
        s += aij * v[j];
        p[j] += aij * vi;
      }
      p[i] += s + w[row + i] * vi;
    }
    // w = τ p − (τ² / 2)(pᵀ v) v  (p still un-scaled here)
    let pv = 0;
    for (let i = 0; i < r; i++) pv += p[i] * v[i];
    const c = 0.5 * t * t * pv;
    for (let i = 0; i < r; i++) p[i] = t * p[i] - c * v[i];
    // A22 −= v wᵀ + w vᵀ (lower triangle)
    for (let i = 0; i < r; i++) {
      const row = (base + i) * n + base;
      const vi = v[i];
      const wi = p[i];
      for (let j = 0; j <= i; j++) w[row + j] -= vi * p[j] + wi * v[j];
    }
    // restore the stored reflector's leading entry as 1 (already), keep for accumulation
  }
  if (n >= 2) {
    d[n - 2] = w[(n - 2) * n + n - 2];
    e[n - 2] = w[(n - 1) * n + n - 2];
    tau[n - 2] = 0;
  }
  d[n - 1] = w[(n - 1) * n + n - 1];
  e[n - 1] = 0;
}

/**
 * Forms Qᵀ = H_{n-3} ⋯ H_1 H_0 (row-major) from the reflectors left in `w` by tridiagonalize.
 * Built right to left: P ← P·H_k, starting from the identity; only rows/columns > k are touched.
 */
function accumulateQt(w: Float64Array, n: number, tau: Float64Array): Float64Array {
  const q = new Float64Array(n * n);
  for (let i = 0; i < n; i++) q[i * n + i] = 1;
  const v = new Float64Array(n);
  for (let k = n - 3; k >= 0; k--) {
    const t = tau[k];
    if (t === 0) continue;
    const base = k + 1;
    const r = n - base;
    for (let i = 0; i < r; i++) v[i] = w[(base + i) * n + k];
    v[0] = 1;
    // Rows base..n-1 of P: row ← row − τ (row·v) vᵀ, restricted to columns base..n-1.
    for (let i = base; i < n; i++) {
      const row = i * n + base;
      let s = 0;
      for (let j = 0; j < r; j++) s += q[row + j] * v[j];
      if (s === 0) continue;
      s *= t;
      for (let j = 0; j < r; j++) q[row + j] -= s * v[j];
    }
  }
  return q;
}

/**
 * Implicit QL with Wilkinson shifts on the symmetric tridiagonal matrix (d, e), e[i] coupling i and
 * i+1. On exit d holds the (unsorted) eigenvalues. If `z` is given (row-major n×n), every rotation
 * is applied to its rows, so if z = Qᵀ on entry, row j of z is the eigenvector for d[j] on exit.
 */
export function tridiagonalQL(d: Float64Array, e: Float64Array, n: number, z: Float64Array | null): void {
  if (n <= 1) return;
  // Scale to O(1) so the plain √(x² + y²) below (much faster than Math.hypot) cannot overflow.
  let big = 0;
  for (let i = 0; i < n; i++) big = Math.max(big, Math.abs(d[i]), Math.abs(e[i]));
  if (big === 0 || !Number.isFinite(big)) return;
  const scaled = big > 1e100 || big < 1e-100;
  if (scaled) {
    for (let i = 0; i < n; i++) {
      d[i] /= big;
      e[i] /= big;
    }
  }
  tql(d, e, n, z);
  if (scaled) for (let i = 0; i < n; i++) d[i] *= big;
}

function tql(d: Float64Array, e: Float64Array, n: number, z: Float64Array | null): void {
  const e2 = new Float64Array(n); // work copy: e2[i] couples i and i+1, e2[n-1] = 0
  for (let i = 0; i < n - 1; i++) e2[i] = e[i];
  e2[n - 1] = 0;
  const eps = 2.220446049250313e-16;
  let f = 0;
  let tst1 = 0;
  for (let l = 0; l < n; l++) {
    tst1 = Math.max(tst1, Math.abs(d[l]) + Math.abs(e2[l]));
    let m = l;
    while (m < n) {
      if (Math.abs(e2[m]) <= eps * tst1) break;
      m++;
    }
    if (m === n) m = n - 1;
    if (m > l) {
      let iter = 0;
      do {
        if (++iter > 60) throw new Error('tridiagonalQL: no convergence');
        let g = d[l];
        let p = (d[l + 1] - g) / (2 * e2[l]);
        let r = Math.sqrt(p * p + 1);
        if (p < 0) r = -r;
        d[l] = e2[l] / (p + r);
        d[l + 1] = e2[l] * (p + r);
        const dl1 = d[l + 1];
        let h = g - d[l];
        for (let i = l + 2; i < n; i++) d[i] -= h;
        f += h;
        p = d[m];
        let c = 1;
        let c2 = c;
        let c3 = c;
        const el1 = e2[l + 1];
        let s = 0;
        let s2 = 0;
        for (let i = m - 1; i >= l; i--) {
          c3 = c2;
          c2 = c;
          s2 = s;
          g = c * e2[i];
          h = c * p;
          r = Math.sqrt(p * p + e2[i] * e2[i]);
          e2[i + 1] = s * r;
          s = e2[i] / r;
          c = p / r;
          p = c * d[i] - s * g;
          d[i + 1] = h + s * (c * g + s * d[i]);
          if (z) {
            const ri = i * n;
            const ri1 = ri + n;
            for (let k = 0; k < n; k++) {
              const hk = z[ri1 + k];
              const zk = z[ri + k];
              z[ri1 + k] = s * zk + c * hk;
              z[ri + k] = c * zk - s * hk;
            }
          }
        }
        p = (-s * s2 * c3 * el1 * e2[l]) / dl1;
        e2[l] = s * p;
        d[l] = c * p;
      } while (Math.abs(e2[l]) > eps * tst1);
    }
    d[l] = d[l] + f;
    e2[l] = 0;
  }
}

/** Inverse of an upper-triangular k×k row-major matrix (returned upper triangular, row-major). */
export function invertUpper(r: Float64Array, k: number): Float64Array {
  const x = new Float64Array(k * k);
  // Solve R X = I column by column of X, back-substitution row-wise on X rows for contiguity.
  for (let i = k - 1; i >= 0; i--) {
    const ri = i * k;
    const inv = 1 / r[ri + i];
    x[ri + i] = inv;
    // x[i][c] for c > i: -(Σ_{p=i+1..c} r[i][p] x[p][c]) / r[i][i]
    for (let p = i + 1; p < k; p++) {
      const rip = r[ri + p];
      if (rip === 0) continue;
      const xp = p * k;
      for (let c = p; c < k; c++) x[ri + c] -= rip * x[xp + c];
    }
    for (let c = i + 1; c < k; c++) x[ri + c] *= inv;
  }
  return x;
}
