/**
 * The channel scheme (Zhang, Zou, He & Sun, TPAMI 2016): a 1×1 Conv2D (any stride) or a Dense layer
 * with C inputs and N outputs is a C×N matrix W applied at every position; it becomes two stock
 * layers of the same kind, `<name>_a` C→K (no bias, linear, the original stride) and `<name>_b`
 * K→N (the original bias and activation). Its filter-reconstruction optimum is the rank-K
 * truncated SVD of W (scheme2-math.ts at kh = kw = 1).
 *
 * Data reconstruction has a closed form, so no iterative fit: with x̃ the layer's input in the
 * network being fitted and y = Wᵀx its original response, the rank-K M minimising
 * Σ‖y − Mᵀx̃ − o‖² + λ‖M − W‖² is a reduced-rank regression (the prior λ = κμR of
 * src/reconstruct/fit.ts acts as λ extra samples √λ·I → √λ·W). With S = Σx̃x̃ᵀ + λI and
 * B = Σx̃yᵀ + λW (centred when the offset o is free), M = S⁻¹B·P·Pᵀ, P the top-K eigenvectors of
 * BᵀS⁻¹B (N×N; solved in the C-dimensional range of B when C < N). The statistics are C×C and C×N,
 * whatever the number of images.
 *
 * Factor layouts (the tfjs kernels of the two layers): Conv2D [1,1,C,K], [1,1,K,N]; Dense [C,K], [K,N].
 */
import * as tf from '@tensorflow/tfjs';
import type { ConvGeometry } from '../model/cost.js';
import { scheme2Factorize, scheme2Kernel } from './scheme2-math.js';
import { matmulF64, matmulTransAF64, orthonormalizeColumnsF64 } from '../linalg/dense.js';
import { symmetricEigen } from '../linalg/eigen.js';
import { spectrum } from '../linalg/svd.js';
import { xoshiro128plus } from '../runtime/random.js';
import { solveSymmetric } from '../linalg/solve.js';
import { matMulBT, matMulT, toF64 } from '../linalg/conv-ops.js';
import { isPointwise } from '../model/layers.js';
import { activationOf, biasWeights, conv2dLayer, denseLayer } from './layers.js';
import { tailErrors, type ClosedFormFit, type FactoredForm, type ResponseSpectrum, type Scheme, type TargetLayer, type WeightValue } from './scheme.js';


const macs = (g: ConvGeometry, rank: number): number => g.outH * g.outW * rank * (g.C + g.N);

function factorShapes(target: TargetLayer, rank: number): [number[], number[]] {
  const { C, N } = target.geometry;
  return target.className === 'Dense' ? [[C, rank], [rank, N]] : [[1, 1, C, rank], [1, 1, rank, N]];
}

/** Name suffixes of the C→K and K→N layers. */
const PIECES = ['_a', '_b'];

export const channel: Scheme = {
  pieceSuffixes: PIECES,
  id: 'channel',
  recipe: { scheme: 'channel', basis: 'per-channel', separable: false },
  label: 'channel (C→K then K→N)',
  refuses(layer) {
    if (isPointwise(layer)) return null;
    const k = layer.config.kernelSize;
    const what = Array.isArray(k) ? `${k.join('×')} ${layer.className}` : layer.className;
    return `it is a ${what}; the channel scheme replaces 1×1 Conv2D and Dense layers (use --scheme 1 or 2 for larger kernels)`;
  },
  fullRank: (g) => Math.min(g.C, g.N),
  macs,
  params: (g, rank) => rank * (g.C + g.N) + (g.useBias ? g.N : 0),

  errorCurve(target) {
    const { C, N } = target.geometry;
    return tailErrors(spectrum(target.kernel, C, N), Math.min(C, N));
  },

  responseSpectrum(target) {
    return new ResponseCovariance(target.geometry, target.kernel);
  },

  factorize(target, rank) {
    const { C, N } = target.geometry;
    const f = scheme2Factorize(target.kernel, { kh: 1, kw: 1, C, N }, rank);
    const [a, b] = factorShapes(target, rank);
    return { target, scheme: channel, rank, bias: target.bias, factors: [{ shape: a, values: f.vertical }, { shape: b, values: f.horizontal }] };
  },

  kernelOf(target, factors) {
    const { C, N } = target.geometry;
    return scheme2Kernel({ rank: factors[0].shape[factors[0].shape.length - 1], vertical: factors[0].values, horizontal: factors[1].values }, { kh: 1, kw: 1, C, N });
  },

  layers({ target, rank, factors, bias }) {
    const g = target.geometry;
    const base = target.config;
    const [a, b] = PIECES.map((s) => `${target.name}${s}`);
    if (target.className === 'Dense') {
      return [
        denseLayer(base, a, rank, false, null, [factors[0]]),
        denseLayer(base, b, g.N, g.useBias, activationOf(base), [factors[1], ...biasWeights(bias, g)]),
      ];
    }
    return [
      conv2dLayer(base, a, rank, [1, 1], [g.sh, g.sw], [1, 1], false, null, [factors[0]]),
      conv2dLayer(base, b, g.N, [1, 1], [1, 1], [1, 1], g.useBias, activationOf(base), [factors[1], ...biasWeights(bias, g)]),
    ];
  },

  factored: (target, rank) => new ChannelForm(target, rank),
};

/** The input at the layer's output positions as rows (R × C): a 1×1 conv with stride s reads every s-th position. */
function inputRows(x: tf.Tensor4D, g: ConvGeometry): tf.Tensor2D {
  return tf.tidy(() => {
    const strided = g.sh === 1 && g.sw === 1 ? x : tf.stridedSlice(x, [0, 0, 0, 0], x.shape, [1, g.sh, g.sw, 1]);
    return strided.reshape([-1, g.C]);
  });
}

/** Adds each of `parts` into the float64 sum beside it (the streamed statistics below), and disposes them. */
function addInto(sums: Float64Array[], parts: tf.Tensor[]): void {
  parts.forEach((t, k) => {
    const values = t.dataSync();
    for (let i = 0; i < values.length; i++) sums[k][i] += values[i];
  });
  tf.dispose(parts);
}

class ChannelForm implements FactoredForm {
  g: ConvGeometry;
  last = 1;
  lastFanIn: number;
  macsPerImage: number;
  priorMacs: number;
  private k: number;
  private kernel: Float32Array;
  /** The original kernel as a C × N matrix. */
  private wm: tf.Tensor2D;

  constructor(target: TargetLayer, rank: number) {
    const g = (this.g = target.geometry);
    this.k = rank;
    this.lastFanIn = rank;
    this.macsPerImage = macs(g, rank);
    this.priorMacs = 3 * g.C * rank * g.N;
    this.kernel = target.kernel;
    this.wm = tf.tensor2d(target.kernel, [g.C, g.N]);
  }

  private matrices(f: tf.Tensor[]): [tf.Tensor2D, tf.Tensor2D] {
    return [f[0].reshape([this.g.C, this.k]), f[1].reshape([this.k, this.g.N])];
  }

  forward(x: tf.Tensor4D, f: tf.Tensor[]): tf.Tensor2D {
    return tf.tidy(() => {
      const [a, b] = this.matrices(f);
      return tf.matMul(tf.matMul(inputRows(x, this.g), a), b);
    });
  }

  step(x: tf.Tensor4D, f: tf.Tensor[], target: tf.Tensor2D, offset: tf.Tensor1D | null) {
    const out = tf.tidy(() => {
      const [a, b] = this.matrices(f);
      const rows = inputRows(x, this.g);
      const z = tf.matMul(rows, a) as tf.Tensor2D;
      let e = tf.matMul(z, b).sub(target) as tf.Tensor2D;
      if (offset) e = e.add(offset) as tf.Tensor2D;
      const sse = e.square().sum() as tf.Scalar;
      const db = matMulT(z, e).reshape(f[1].shape);
      const da = matMulT(rows, matMulBT(e, b)).reshape(f[0].shape);
      return offset ? [sse, da, db, e.sum(0)] : [sse, da, db];
    });
    return { sse: out[0] as tf.Scalar, grads: out.slice(1, 3), offsetGrad: (out[3] as tf.Tensor1D | undefined) ?? null };
  }

  design(x: tf.Tensor4D, f: tf.Tensor[]): tf.Tensor2D {
    return tf.tidy(() => tf.matMul(inputRows(x, this.g), this.matrices(f)[0]));
  }

  filterObjective(f: tf.Tensor[]) {
    return tf.tidy(() => {
      const [a, b] = this.matrices(f);
      const delta = tf.matMul(a, b).sub(this.wm) as tf.Tensor2D;
      return { value: delta.square().sum() as tf.Scalar, grads: [matMulBT(delta, b).mul(2).reshape(f[0].shape), matMulT(a, delta).mul(2).reshape(f[1].shape)] };
    });
  }

  filterNormal(f: tf.Tensor[]) {
    const [gram, rhs] = tf.tidy(() => {
      const [a] = this.matrices(f);
      return [matMulT(a, a), matMulT(a, this.wm)];
    });
    return { gram: toF64(gram), rhs: toF64(rhs) };
  }

  closedForm(): ClosedFormFit {
    return new ChannelStatistics(this.g, this.k, this.kernel);
  }

  dispose(): void {
    this.wm.dispose();
  }
}

/**
 * The input covariance Σ (centred: the fit's offset absorbs the mean), from which the responses
 * y = Wᵀx have covariance WᵀΣW; its eigenvalues λ give the best rank-K reconstruction's relative
 * error √(Σ_{i>K} λᵢ / Σλᵢ), the reduced-rank regression above without the prior. When N > C
 * they are the squared singular values of Λ^½VᵀW (C × N) for Σ = VΛVᵀ, the smaller problem.
 */
class ResponseCovariance implements ResponseSpectrum {
  private xx: Float64Array;
  private xSum: Float64Array;
  private rows = 0;

  constructor(private g: ConvGeometry, private kernel: Float32Array) {
    this.xx = new Float64Array(g.C * g.C);
    this.xSum = new Float64Array(g.C);
  }

  add(x: tf.Tensor4D): void {
    const rows = inputRows(x, this.g);
    this.rows += rows.shape[0];
    addInto([this.xx, this.xSum], tf.tidy(() => [matMulT(rows, rows), rows.sum(0)]));
    rows.dispose();
  }

  errorCurve(): Float64Array {
    const { C, N } = this.g;
    const n = Math.max(this.rows, 1);
    const cov = new Float64Array(C * C);
    for (let i = 0; i < C; i++) for (let j = 0; j < C; j++) cov[i * C + j] = this.xx[i * C + j] / n - (this.xSum[i] / n) * (this.xSum[j] / n);
    const w = Float64Array.from(this.kernel);
    if (N <= C) {
      // WᵀΣW directly (N × N, eigenvalues only): a wide layer's C × C eigenvectors would cost seconds.
      const values = symmetricEigen(matmulTransAF64(w, matmulF64(cov, w, C, C, N), C, N, N), N, false).values;
      return tailErrors(values.map((v) => Math.max(v, 0)), N);
    }
    const { values, vectors } = symmetricEigen(cov, C, true);
    const scaled = new Float32Array(C * N);
    for (let a = 0; a < C; a++) {
      const s = Math.sqrt(Math.max(values[a], 0));
      for (let j = 0; j < N; j++) {
        let acc = 0;
        for (let i = 0; i < C; i++) acc += vectors![i * C + a] * w[i * N + j];
        scaled[a * N + j] = s * acc;
      }
    }
    return tailErrors(spectrum(scaled, C, N), C);
  }
}

/** Σx̃x̃ᵀ, Σx̃yᵀ, Σx̃, Σy and the row count, accumulated in float64. */
class ChannelStatistics implements ClosedFormFit {
  private xx: Float64Array;
  private xy: Float64Array;
  private xSum: Float64Array;
  private ySum: Float64Array;
  private rows = 0;

  constructor(private g: ConvGeometry, private k: number, private kernel: Float32Array) {
    this.xx = new Float64Array(g.C * g.C);
    this.xy = new Float64Array(g.C * g.N);
    this.xSum = new Float64Array(g.C);
    this.ySum = new Float64Array(g.N);
  }

  add(x: tf.Tensor4D, y: tf.Tensor2D): void {
    const parts = tf.tidy(() => {
      const rows = inputRows(x, this.g);
      return [matMulT(rows, rows), matMulT(rows, y), rows.sum(0), y.sum(0)];
    });
    addInto([this.xx, this.xy, this.xSum, this.ySum], parts);
    this.rows += y.shape[0];
  }

  solve(start: WeightValue[], hasBias: boolean, kappa: number) {
    const { C, N } = this.g;
    const K = this.k;
    const n = this.rows;
    const xMean = this.xSum.map((v) => (hasBias ? v / n : 0));
    const yMean = this.ySum.map((v) => (hasBias ? v / n : 0));
    let trace = 0;
    for (let c = 0; c < C; c++) trace += this.xx[c * C + c];
    const lambda = kappa * (trace / (n * C)) * n;
    const s = Float64Array.from(this.xx);
    const b = Float64Array.from(this.xy);
    for (let i = 0; i < C; i++) {
      for (let j = 0; j < C; j++) s[i * C + j] -= n * xMean[i] * xMean[j];
      for (let j = 0; j < N; j++) b[i * N + j] += lambda * this.kernel[i * N + j] - n * xMean[i] * yMean[j];
      s[i * C + i] += lambda;
    }
    const z = solveSymmetric(s, b, C, N); // S⁻¹B, C × N
    const p = topResponseSubspace(b, z, C, N, K);
    // Balanced factors: column k of S⁻¹BP and row k of Pᵀ scaled to the same norm.
    const first = matmulF64(z, p, C, N, K);
    const second = new Float64Array(K * N);
    for (let k = 0; k < K; k++) {
      let norm = 0;
      for (let c = 0; c < C; c++) norm += first[c * K + k] ** 2;
      const scale = norm > 0 ? Math.sqrt(Math.sqrt(norm)) : 1;
      for (let c = 0; c < C; c++) first[c * K + k] /= scale;
      for (let j = 0; j < N; j++) second[k * N + j] = p[j * K + k] * scale;
    }
    const m = matmulF64(first, second, C, K, N);
    const offset = hasBias ? yMean.map((v, j) => v - xMean.reduce((acc, xc, c) => acc + xc * m[c * N + j], 0)) : null;
    const [a0, b0] = start;
    return {
      factors: [{ shape: a0.shape.slice(), values: Float32Array.from(first) }, { shape: b0.shape.slice(), values: Float32Array.from(second) }],
      offset: offset ? Float32Array.from(offset) : null,
    };
  }
}

/**
 * P (N × K, orthonormal columns): the top-K eigenvectors of G = BᵀZ, Z = S⁻¹B. When C < N, G has
 * rank ≤ C and lives in the range of Bᵀ: with Q an orthonormal basis of it (N × C), P = Q·W, W the
 * top eigenvectors of QᵀGQ = (BQ)ᵀ(ZQ) (C × C).
 */
function topResponseSubspace(b: Float64Array, z: Float64Array, C: number, N: number, K: number): Float64Array {
  const top = (g: Float64Array, n: number): Float64Array => {
    const vectors = symmetricEigen(g, n, true).vectors!;
    const out = new Float64Array(n * K);
    for (let i = 0; i < n; i++) for (let k = 0; k < K; k++) out[i * K + k] = vectors[i * n + k];
    return out;
  };
  if (N <= C) return top(matmulTransAF64(b, z, C, N, N), N);
  const q = new Float64Array(N * C);
  for (let i = 0; i < C; i++) for (let j = 0; j < N; j++) q[j * C + i] = b[i * N + j];
  const rng = xoshiro128plus(C * 7919 + N);
  orthonormalizeColumnsF64(q, N, C, () => rng.gaussian());
  const e = matmulTransAF64(matmulF64(b, q, C, N, C), matmulF64(z, q, C, N, C), C, C, C);
  return matmulF64(q, top(e, C), N, C, K);
}
