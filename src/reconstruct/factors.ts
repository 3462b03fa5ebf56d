/**
 * Each scheme's replacement as a differentiable function of its factors: the forward pass of the
 * replacement's linear response (no bias, no activation) on a layer input, the gradient of the
 * squared error with respect to every factor (by hand, from the fast kernels of ops.ts), the
 * design matrix of its last linear factor (for the exact least-squares solve), and the map from
 * factors to the full kernel (the filter-reconstruction prior).
 *
 * Factor layouts are the tfjs weight layouts of the replacement layers (see schemes.ts):
 *   Scheme 2:            V [kh,1,C,K], H [1,kw,K,N]
 *   Scheme 1:            S [kh,kw,C,M] (depthwise), A [1,1,C·M,N] (pointwise)
 *   Scheme 1 separable:  V [kh,1,C,M], Hs [1,kw,C·M,1] (depthwise), A [1,1,C·M,N]
 *
 * Scheme 1 with the shared basis (the paper's S¹ = … = Sᶜ) starts from the shared basis but fits
 * each channel's copy on its own: the SeparableConv2D stores a basis per channel anyway, so this
 * costs nothing at inference and can only fit better.
 */
import * as tf from '@tensorflow/tfjs';
import { scheme1Macs, scheme2Macs, type ConvGeometry } from '../cost.js';
import type { ConvLayer, Replacement, WeightValue } from '../schemes.js';
import {
  conv, convFilterGrad, convInputGrad, crop2d, dwConv, dwFilterGrad, dwInputGrad, matMulBT, matMulT, pad2d, paddingOf, stripes, type Pair,
} from './ops.js';

export type FactorKind = 'scheme2' | 'scheme1' | 'scheme1-separable';

export interface FactoredLayer {
  kind: FactorKind;
  g: ConvGeometry;
  /** Initial factors (the filter reconstruction), tfjs layouts, owned by the caller. */
  initial(): tf.Tensor[];
  /** Linear response (R × N) of the factors on input x (B, inH, inW, C), R = B·outH·outW. */
  forward(x: tf.Tensor4D, f: tf.Tensor[]): tf.Tensor2D;
  /** Gradient of ½‖E‖² for the residual E = forward(x) + offset − target (R × N); `inter` from forward. */
  step(x: tf.Tensor4D, f: tf.Tensor[], target: tf.Tensor2D, offset: tf.Tensor1D | null): { sse: tf.Scalar; grads: tf.Tensor[]; offsetGrad: tf.Tensor1D | null };
  /** MACs of the replacement per image, and of one evaluation of the filter objective. */
  macsPerImage: number;
  priorMacs: number;
  /** Index of the last linear factor, and its fan-in (rows of its (fanIn × N) matrix). */
  last: number;
  lastFanIn: number;
  /** Design matrix (R × lastFanIn) of the last factor: forward = design · last.reshape(fanIn, N). */
  design(x: tf.Tensor4D, f: tf.Tensor[]): tf.Tensor2D;
  /** ‖Ŵ(f) − W‖² and its gradient (the filter-reconstruction objective). */
  filterObjective(f: tf.Tensor[]): { value: tf.Scalar; grads: tf.Tensor[] };
  /**
   * The filter objective as a quadratic in the last factor: ‖W‖² − 2⟨rhs, A⟩ + ⟨A, gram·A⟩ with
   * A the (fanIn × N) matrix of the last factor (gram is block-diagonal, dense here).
   */
  filterNormal(f: tf.Tensor[]): { gram: Float64Array; rhs: Float64Array };
  /** The replacement layers' weights for factors f and bias (tfjs order, per layer). */
  weights(f: tf.Tensor[], bias: Float32Array | null): WeightValue[][];
  dispose(): void;
}

const toF64 = (t: tf.Tensor): Float64Array => {
  const d = Float64Array.from(t.dataSync());
  t.dispose();
  return d;
};

function value(t: tf.Tensor): WeightValue {
  return { shape: t.shape.slice(), values: Float32Array.from(t.dataSync()) };
}

/** Block-diagonal gram (nb blocks of m×m, given as (nb, m, m)) as a dense (nb·m)² matrix. */
function blockDiagonal(blocks: Float64Array, nb: number, m: number): Float64Array {
  const n = nb * m;
  const out = new Float64Array(n * n);
  for (let b = 0; b < nb; b++) {
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < m; j++) out[(b * m + i) * n + b * m + j] = blocks[(b * m + i) * m + j];
    }
  }
  return out;
}

// ---- Scheme 2 -----------------------------------------------------------------------------------

class Scheme2Layer implements FactoredLayer {
  kind: FactorKind = 'scheme2';
  last = 1;
  lastFanIn: number;
  macsPerImage: number;
  priorMacs: number;
  private pad: [Pair, Pair];
  private k: number;
  /** The original kernel as a (kh·C) × (kw·N) matrix: rows (i, c), columns (j, n). */
  private wm: tf.Tensor2D;

  constructor(public g: ConvGeometry, private conv0: ConvLayer, private replacement: Replacement) {
    this.pad = paddingOf(g);
    this.k = replacement.layers[0].weights[0].shape[3];
    this.lastFanIn = g.kw * this.k;
    this.macsPerImage = scheme2Macs(g, this.k);
    this.priorMacs = 3 * g.kh * g.C * this.k * g.kw * g.N;
    this.wm = tf.tidy(() => tf.tensor4d(conv0.kernel, [g.kh, g.kw, g.C, g.N]).transpose([0, 2, 1, 3]).reshape([g.kh * g.C, g.kw * g.N]));
  }

  initial(): tf.Tensor[] {
    const [v, h] = this.replacement.layers;
    return [tf.tensor(v.weights[0].values, v.weights[0].shape), tf.tensor(h.weights[0].values, h.weights[0].shape)];
  }

  private vertical(x: tf.Tensor4D): tf.Tensor4D {
    return pad2d(x, this.pad[0], [0, 0]);
  }

  forward(x: tf.Tensor4D, f: tf.Tensor[]): tf.Tensor2D {
    const g = this.g;
    return tf.tidy(() => {
      const z = conv(this.vertical(x), f[0] as tf.Tensor4D, [g.sh, 1], [g.dh, 1]);
      const y = conv(pad2d(z, [0, 0], this.pad[1]), f[1] as tf.Tensor4D, [1, g.sw], [1, g.dw]);
      return y.reshape([-1, g.N]);
    });
  }

  step(x: tf.Tensor4D, f: tf.Tensor[], target: tf.Tensor2D, offset: tf.Tensor1D | null) {
    const g = this.g;
    const out = tf.tidy(() => {
      const xp = this.vertical(x);
      const z = conv(xp, f[0] as tf.Tensor4D, [g.sh, 1], [g.dh, 1]);
      const zp = pad2d(z, [0, 0], this.pad[1]);
      const y = conv(zp, f[1] as tf.Tensor4D, [1, g.sw], [1, g.dw]);
      let e = y.sub(target.reshape(y.shape)) as tf.Tensor4D;
      if (offset) e = e.add(offset);
      const sse = e.square().sum() as tf.Scalar;
      const dh = convFilterGrad(zp, e, [1, g.kw], [1, g.sw], [1, g.dw]);
      const dzp = convInputGrad(e, f[1] as tf.Tensor4D, [1, g.sw], [1, g.dw], [zp.shape[1], zp.shape[2]]);
      const dz = crop2d(dzp, [0, 0], this.pad[1]);
      const dv = convFilterGrad(xp, dz, [g.kh, 1], [g.sh, 1], [g.dh, 1]);
      return offset ? [sse, dv, dh, e.sum([0, 1, 2])] : [sse, dv, dh];
    });
    return { sse: out[0] as tf.Scalar, grads: out.slice(1, 3), offsetGrad: (out[3] as tf.Tensor1D | undefined) ?? null };
  }

  design(x: tf.Tensor4D, f: tf.Tensor[]): tf.Tensor2D {
    const g = this.g;
    return tf.tidy(() => {
      const z = conv(this.vertical(x), f[0] as tf.Tensor4D, [g.sh, 1], [g.dh, 1]);
      return stripes(pad2d(z, [0, 0], this.pad[1]), 2, g.kw, g.sw, g.dw, g.outW);
    });
  }

  /** V as (kh·C) × K and H as K × (kw·N). */
  private matrices(f: tf.Tensor[]): [tf.Tensor2D, tf.Tensor2D] {
    const { kh, kw, C, N } = this.g;
    const K = this.k;
    return [f[0].reshape([kh * C, K]), f[1].reshape([kw, K, N]).transpose([1, 0, 2]).reshape([K, kw * N])];
  }

  filterObjective(f: tf.Tensor[]) {
    const { kw, N } = this.g;
    const K = this.k;
    return tf.tidy(() => {
      const [v2, ht] = this.matrices(f);
      const delta = tf.matMul(v2, ht).sub(this.wm) as tf.Tensor2D;
      const dv = matMulBT(delta, ht).mul(2).reshape(f[0].shape);
      const dht = matMulT(v2, delta).mul(2); // K × (kw·N)
      const dh = dht.reshape([K, kw, N]).transpose([1, 0, 2]).reshape(f[1].shape);
      return { value: delta.square().sum() as tf.Scalar, grads: [dv, dh] };
    });
  }

  filterNormal(f: tf.Tensor[]) {
    const { kw, N } = this.g;
    const K = this.k;
    const [gramBlock, rhs] = tf.tidy(() => {
      const [v2] = this.matrices(f);
      const vt = v2.transpose();
      const gram = tf.matMul(vt, v2); // K × K, the same block for every tap j
      const r = tf.matMul(vt, this.wm).reshape([K, kw, N]).transpose([1, 0, 2]); // rows (j, k)
      return [gram, r];
    });
    const block = toF64(gramBlock);
    const tiled = new Float64Array(kw * K * K);
    for (let j = 0; j < kw; j++) tiled.set(block, j * K * K);
    return { gram: blockDiagonal(tiled, kw, K), rhs: toF64(rhs) };
  }

  weights(f: tf.Tensor[], bias: Float32Array | null): WeightValue[][] {
    return [[value(f[0])], [value(f[1]), ...(bias ? [{ shape: [this.g.N], values: bias }] : [])]];
  }

  dispose(): void {
    this.wm.dispose();
  }
}

// ---- Scheme 1 (SeparableConv2D, or the separable three-layer chain) ----------------------------

/** Batched matMul (b, m, k)·(b, k, n) whose gradient transposes explicitly (fast on wasm). */
const batchedMatMul = tf.customGrad(((a: tf.Tensor, b: tf.Tensor, save: tf.GradSaveFunc) => {
  save([a, b]);
  return {
    value: tf.matMul(a as tf.Tensor3D, b as tf.Tensor3D),
    gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
      const [sa, sb] = saved as tf.Tensor3D[];
      return [tf.matMul(dy as tf.Tensor3D, sb.transpose([0, 2, 1])), tf.matMul(sa.transpose([0, 2, 1]), dy as tf.Tensor3D)];
    },
  };
}) as any) as (a: tf.Tensor3D, b: tf.Tensor3D) => tf.Tensor3D;

class Scheme1Layer implements FactoredLayer {
  kind: FactorKind;
  last: number;
  lastFanIn: number;
  macsPerImage: number;
  priorMacs: number;
  private pad: [Pair, Pair];
  private m: number;
  /** The original kernel per channel: (C, kh·kw, N). */
  private w3: tf.Tensor3D;

  constructor(public g: ConvGeometry, conv0: ConvLayer, private replacement: Replacement, private separable: boolean) {
    this.kind = separable ? 'scheme1-separable' : 'scheme1';
    this.pad = paddingOf(g);
    this.m = replacement.layers[0].weights[0].shape[3];
    this.last = separable ? 2 : 1;
    this.lastFanIn = g.C * this.m;
    this.macsPerImage = scheme1Macs(g, this.m, separable);
    this.priorMacs = 3 * g.C * g.kh * g.kw * this.m * g.N;
    this.w3 = tf.tidy(() => tf.tensor4d(conv0.kernel, [g.kh, g.kw, g.C, g.N]).reshape([g.kh * g.kw, g.C, g.N]).transpose([1, 0, 2]));
  }

  initial(): tf.Tensor[] {
    const ws = this.separable ? this.replacement.layers.map((l) => l.weights[0]) : this.replacement.layers[0].weights.slice(0, 2);
    return ws.map((w) => tf.tensor(w.values, w.shape));
  }

  /** The depthwise part's output (B, outH, outW, C·M) and what the gradient needs. */
  private depthwise(x: tf.Tensor4D, f: tf.Tensor[]) {
    const g = this.g;
    if (!this.separable) {
      const xp = pad2d(x, this.pad[0], this.pad[1]);
      return { xp, u: dwConv(xp, f[0] as tf.Tensor4D, [g.sh, g.sw], [g.dh, g.dw]), u1p: null as tf.Tensor4D | null };
    }
    const xp = pad2d(x, this.pad[0], [0, 0]);
    const u1 = dwConv(xp, f[0] as tf.Tensor4D, [g.sh, 1], [g.dh, 1]);
    const u1p = pad2d(u1, [0, 0], this.pad[1]);
    return { xp, u: dwConv(u1p, f[1] as tf.Tensor4D, [1, g.sw], [1, g.dw]), u1p };
  }

  forward(x: tf.Tensor4D, f: tf.Tensor[]): tf.Tensor2D {
    return tf.tidy(() => {
      const { u } = this.depthwise(x, f);
      return tf.matMul(u.reshape([-1, this.lastFanIn]), f[this.last].reshape([this.lastFanIn, this.g.N]));
    });
  }

  step(x: tf.Tensor4D, f: tf.Tensor[], target: tf.Tensor2D, offset: tf.Tensor1D | null) {
    const g = this.g;
    const M = this.m;
    const out = tf.tidy(() => {
      const { xp, u, u1p } = this.depthwise(x, f);
      const u2 = u.reshape([-1, this.lastFanIn]) as tf.Tensor2D;
      const a = f[this.last].reshape([this.lastFanIn, g.N]) as tf.Tensor2D;
      let e = tf.matMul(u2, a).sub(target) as tf.Tensor2D;
      if (offset) e = e.add(offset);
      const sse = e.square().sum() as tf.Scalar;
      const da = matMulT(u2, e).reshape(f[this.last].shape);
      const du = matMulBT(e, a).reshape(u.shape) as tf.Tensor4D;
      let grads: tf.Tensor[];
      if (!this.separable) {
        grads = [dwFilterGrad(xp, du, [g.kh, g.kw], [g.sh, g.sw], [g.dh, g.dw], M), da];
      } else {
        const dhs = dwFilterGrad(u1p!, du, [1, g.kw], [1, g.sw], [1, g.dw], 1);
        const du1p = dwInputGrad(du, f[1] as tf.Tensor4D, [1, g.sw], [1, g.dw], [u1p!.shape[1], u1p!.shape[2]]);
        const du1 = crop2d(du1p, [0, 0], this.pad[1]);
        grads = [dwFilterGrad(xp, du1, [g.kh, 1], [g.sh, 1], [g.dh, 1], M), dhs, da];
      }
      return offset ? [sse, ...grads, e.sum(0)] : [sse, ...grads];
    });
    const n = this.separable ? 3 : 2;
    return { sse: out[0] as tf.Scalar, grads: out.slice(1, 1 + n), offsetGrad: (out[1 + n] as tf.Tensor1D | undefined) ?? null };
  }

  design(x: tf.Tensor4D, f: tf.Tensor[]): tf.Tensor2D {
    return tf.tidy(() => this.depthwise(x, f).u.reshape([-1, this.lastFanIn]));
  }

  /** The basis filters per channel, (C, kh·kw, M), from the depthwise factor(s). */
  private basis(f: tf.Tensor[]): tf.Tensor3D {
    const { kh, kw, C } = this.g;
    const M = this.m;
    if (!this.separable) return f[0].reshape([kh * kw, C, M]).transpose([1, 0, 2]);
    // S[i, j, c, m] = V[i, c, m] · Hs[j, c·M + m]
    const v = f[0].reshape([kh, 1, C, M]);
    const h = f[1].reshape([1, kw, C, M]);
    return v.mul(h).reshape([kh * kw, C, M]).transpose([1, 0, 2]);
  }

  filterObjective(f: tf.Tensor[]) {
    const { C, N } = this.g;
    const M = this.m;
    return tf.tidy(() => {
      const objective = (...factors: tf.Tensor[]) => {
        const a3 = factors[this.last].reshape([C, M, N]) as tf.Tensor3D;
        return batchedMatMul(this.basis(factors), a3).sub(this.w3).square().sum() as tf.Scalar;
      };
      const { value, grads } = tf.valueAndGrads(objective)(f);
      return { value, grads };
    });
  }

  filterNormal(f: tf.Tensor[]) {
    const { C, N } = this.g;
    const M = this.m;
    const [gram, rhs] = tf.tidy(() => {
      const s = this.basis(f);
      const st = s.transpose([0, 2, 1]);
      return [tf.matMul(st, s), tf.matMul(st, this.w3)]; // (C, M, M), (C, M, N): rows (c, m)
    });
    void N;
    return { gram: blockDiagonal(toF64(gram), C, M), rhs: toF64(rhs) };
  }

  weights(f: tf.Tensor[], bias: Float32Array | null): WeightValue[][] {
    const b = bias ? [{ shape: [this.g.N], values: bias }] : [];
    if (!this.separable) return [[value(f[0]), value(f[1]), ...b]];
    return [[value(f[0])], [value(f[1])], [value(f[2]), ...b]];
  }

  dispose(): void {
    this.w3.dispose();
  }
}

/** The factored form of a replacement made by schemes.ts. */
export function factoredLayer(conv0: ConvLayer, replacement: Replacement): FactoredLayer {
  const layers = replacement.layers;
  const g = conv0.geometry;
  if (layers.length === 2 && layers.every((l) => l.className === 'Conv2D')) return new Scheme2Layer(g, conv0, replacement);
  if (layers.length === 1 && layers[0].className === 'SeparableConv2D') return new Scheme1Layer(g, conv0, replacement, false);
  if (layers.length === 3 && layers[0].className === 'DepthwiseConv2D') return new Scheme1Layer(g, conv0, replacement, true);
  throw new Error(`data reconstruction does not know the replacement of ${conv0.name} (${layers.map((l) => l.className).join(', ')})`);
}
