/**
 * Scheme 2 (Jaderberg et al. 2014): a kh×kw conv C→N becomes a kh×1 conv C→K (strides (sh,1), no
 * bias) followed by a 1×kw conv K→N (strides (1,sw), the original bias and activation), named
 * `<name>_v` and `<name>_h`. Its filter-reconstruction optimum is the rank-K truncated SVD of the
 * kernel reshaped to (C·kh)×(kw·N) (scheme2-math.ts).
 *
 * Factor layouts (the tfjs kernels of the two layers): V [kh,1,C,K], H [1,kw,K,N].
 */
import * as tf from '@tensorflow/tfjs';
import type { ConvGeometry } from '../model/cost.js';
import { scheme2Matrix } from './reshape.js';
import { scheme2Factorize, scheme2Kernel } from './scheme2-math.js';
import { spectrum } from '../linalg/svd.js';
import {
  blockDiagonal, conv, convFilterGrad, convInputGrad, crop2d, matMulBT, matMulT, pad2d, paddingOf, patchColumns, toF64, type Pair,
} from '../linalg/conv-ops.js';
import { activationOf, biasWeights, conv2dLayer } from './layers.js';
import { tailErrors, type FactoredForm, type Scheme, type TargetLayer } from './scheme.js';

const dimsOf = (g: ConvGeometry) => ({ kh: g.kh, kw: g.kw, C: g.C, N: g.N });

function macs(g: ConvGeometry, rank: number): number {
  // The vertical conv keeps the full input width: its kernel is 1 wide with stride 1 (no padding).
  const vertical = g.outH * g.inW * rank * g.kh * g.C;
  const horizontal = g.outH * g.outW * g.N * g.kw * rank;
  return vertical + horizontal;
}

/** Name suffixes of the vertical and horizontal convs. */
const PIECES = ['_v', '_h'];

export const scheme2: Scheme = {
  pieceSuffixes: PIECES,
  id: 'scheme2',
  recipe: { scheme: '2', basis: 'per-channel', separable: false },
  label: 'scheme 2 (kh×1 then 1×kw)',
  refuses: (layer) => (layer.className === 'Conv2D' ? null : `it is a ${layer.className}; scheme 2 replaces Conv2D layers`),
  fullRank: (g) => Math.min(g.C * g.kh, g.kw * g.N),
  macs,
  params: (g, rank) => g.kh * g.C * rank + g.kw * rank * g.N + (g.useBias ? g.N : 0),

  errorCurve(target) {
    const g = target.geometry;
    const sigma2 = spectrum(scheme2Matrix(target.kernel, dimsOf(g)), g.C * g.kh, g.kw * g.N);
    return tailErrors(sigma2, scheme2.fullRank(g));
  },

  factorize(target, rank) {
    const f = scheme2Factorize(target.kernel, dimsOf(target.geometry), rank);
    const { kh, kw, C, N } = target.geometry;
    return {
      target, scheme: scheme2, rank, bias: target.bias,
      factors: [{ shape: [kh, 1, C, rank], values: f.vertical }, { shape: [1, kw, rank, N], values: f.horizontal }],
    };
  },

  kernelOf(target, factors) {
    return scheme2Kernel({ rank: factors[0].shape[3], vertical: factors[0].values, horizontal: factors[1].values }, dimsOf(target.geometry));
  },

  layers({ target, rank, factors, bias }) {
    const g = target.geometry;
    const base = target.config;
    return [
      conv2dLayer(base, `${target.name}${PIECES[0]}`, rank, [g.kh, 1], [g.sh, 1], [g.dh, 1], false, null, [factors[0]]),
      conv2dLayer(base, `${target.name}${PIECES[1]}`, g.N, [1, g.kw], [1, g.sw], [1, g.dw], g.useBias, activationOf(base),
        [factors[1], ...biasWeights(bias, g)]),
    ];
  },

  factored: (target, rank) => new Scheme2Form(target, rank),
};

class Scheme2Form implements FactoredForm {
  g: ConvGeometry;
  last = 1;
  lastFanIn: number;
  macsPerImage: number;
  priorMacs: number;
  private pad: [Pair, Pair];
  private k: number;
  /** The original kernel as a (kh·C) × (kw·N) matrix: rows (i, c), columns (j, n). */
  private wm: tf.Tensor2D;

  constructor(target: TargetLayer, rank: number) {
    const g = (this.g = target.geometry);
    this.pad = paddingOf(g);
    this.k = rank;
    this.lastFanIn = g.kw * rank;
    this.macsPerImage = macs(g, rank);
    this.priorMacs = 3 * g.kh * g.C * rank * g.kw * g.N;
    this.wm = tf.tidy(() => tf.tensor4d(target.kernel, [g.kh, g.kw, g.C, g.N]).transpose([0, 2, 1, 3]).reshape([g.kh * g.C, g.kw * g.N]));
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
      return patchColumns(pad2d(z, [0, 0], this.pad[1]), 2, g.kw, g.sw, g.dw, g.outW);
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

  dispose(): void {
    this.wm.dispose();
  }
}
