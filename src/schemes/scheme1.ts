/**
 * Scheme 1 (Jaderberg et al. 2014): every filter is a combination of M basis filters applied to each
 * input channel — a depthwise conv with multiplier M then a 1×1 conv. Three variants:
 *
 * - per-channel basis (default): one SeparableConv2D under the original name, each channel its own
 *   basis (rank-M SVD per channel);
 * - shared basis (the paper's S¹ = … = Sᶜ): the same layer, one basis for all channels;
 * - separable: each basis filter rank-1: `<name>_v` DepthwiseConv2D kh×1 → `<name>_h`
 *   DepthwiseConv2D 1×kw → `<name>_p` Conv2D 1×1, fitted by alternating least squares.
 *
 * Factor layouts (the tfjs kernels of the new layers):
 *   plain:      S [kh,kw,C,M] (depthwise), A [1,1,C·M,N] (pointwise)
 *   separable:  V [kh,1,C,M], Hs [1,kw,C·M,1] (depthwise), A [1,1,C·M,N]
 *
 * In data reconstruction the shared basis starts shared but each channel's copy is fitted on its
 * own: the SeparableConv2D stores a basis per channel anyway, so this costs nothing at inference.
 */
import * as tf from '@tensorflow/tfjs';
import type { ConvGeometry } from '../model/cost.js';
import { scheme1Factorize, type Basis, type Scheme1Factors } from './scheme1-math.js';
import { symmetricEigen } from '../linalg/eigen.js';
import {
  blockDiagonal, crop2d, dwConv, dwFilterGrad, dwInputGrad, matMulBT, matMulT, pad2d, paddingOf, toF64, type Pair,
} from '../linalg/conv-ops.js';
import { activationOf, biasWeights, conv2dLayer, depthwiseLayer, separableLayer } from './layers.js';
import type { FactoredForm, Scheme, TargetLayer, WeightValue } from './scheme.js';

export type { Basis } from './scheme1-math.js';

function macs(g: ConvGeometry, rank: number, separable: boolean): number {
  const pointwise = g.outH * g.outW * g.C * rank * g.N;
  if (!separable) return g.outH * g.outW * g.C * rank * g.kh * g.kw + pointwise;
  const vertical = g.outH * g.inW * g.C * rank * g.kh;
  const horizontal = g.outH * g.outW * g.C * rank * g.kw;
  return vertical + horizontal + pointwise;
}

/** Scheme 1 factors in the tfjs layouts above. */
function tfjsFactors(f: Scheme1Factors, g: ConvGeometry): WeightValue[] {
  const { kh, kw, C, N } = g;
  const D = kh * kw;
  const M = f.rank;
  const pointwise: WeightValue = { shape: [1, 1, C * M, N], values: Float32Array.from(f.coeff) };
  if (!(f.p && f.q)) {
    const depthwise = new Float32Array(D * C * M);
    for (let c = 0; c < C; c++) {
      for (let m = 0; m < M; m++) {
        for (let t = 0; t < D; t++) depthwise[(t * C + c) * M + m] = f.basisFilters[(c * M + m) * D + t];
      }
    }
    return [{ shape: [kh, kw, C, M], values: depthwise }, pointwise];
  }
  const vertical = new Float32Array(kh * C * M);
  const horizontal = new Float32Array(kw * C * M);
  for (let c = 0; c < C; c++) {
    for (let m = 0; m < M; m++) {
      for (let i = 0; i < kh; i++) vertical[(i * C + c) * M + m] = f.p[(c * M + m) * kh + i];
      for (let j = 0; j < kw; j++) horizontal[j * C * M + c * M + m] = f.q[(c * M + m) * kw + j];
    }
  }
  return [{ shape: [kh, 1, C, M], values: vertical }, { shape: [1, kw, C * M, 1], values: horizontal }, pointwise];
}

/**
 * Gram matrices (D×D, D = kh·kw) of each input channel's N×D slice matrix — or their sum, for a
 * shared basis: their eigenvalues are the energies a rank-M basis keeps.
 */
function channelGrams(kernel: Float32Array, g: ConvGeometry, shared: boolean): Float64Array[] {
  const { kh, kw, C, N } = g;
  const D = kh * kw;
  const grams = Array.from({ length: shared ? 1 : C }, () => new Float64Array(D * D));
  for (let c = 0; c < C; c++) {
    const gram = grams[shared ? 0 : c];
    for (let a = 0; a < D; a++) {
      for (let b = a; b < D; b++) {
        let s = 0;
        for (let n = 0; n < N; n++) s += kernel[(a * C + c) * N + n] * kernel[(b * C + c) * N + n];
        gram[a * D + b] += s;
        if (b !== a) gram[b * D + a] += s;
      }
    }
  }
  return grams;
}

/** The basis filter value S[i, j, c, m] of tfjs-layout factors. */
function basisAt(factors: WeightValue[], g: ConvGeometry, M: number, separable: boolean): (i: number, j: number, c: number, m: number) => number {
  const { kw, C } = g;
  if (!separable) return (i, j, c, m) => factors[0].values[((i * kw + j) * C + c) * M + m];
  return (i, j, c, m) => factors[0].values[(i * C + c) * M + m] * factors[1].values[j * C * M + c * M + m];
}

/** Name suffixes of the separable variant's vertical, horizontal and pointwise layers (the plain variant keeps the name). */
const SEPARABLE_PIECES = ['_v', '_h', '_p'];

export function scheme1(basis: Basis, separable: boolean): Scheme {
  const scheme: Scheme = {
    pieceSuffixes: separable ? SEPARABLE_PIECES : [],
    id: 'scheme1',
    recipe: { scheme: '1', basis, separable },
    label: `scheme 1 (${basis} basis${separable ? ', separable' : ''})`,
    refuses(layer) {
      if (layer.className !== 'Conv2D') return `it is a ${layer.className}; scheme 1 replaces Conv2D layers`;
      const d = layer.config.dilationRate;
      const dilated = Array.isArray(d) ? d.some((v: number) => v > 1) : (d ?? 1) > 1;
      // tfjs' DepthwiseConv2D ignores dilation.
      if (separable && dilated) return "it is dilated, and tfjs' DepthwiseConv2D ignores dilation; use --scheme 2, or --scheme 1 without --separable";
      return null;
    },
    // Rank-1 (separable) basis filters span all kh·kw filters only with kh·kw of them.
    fullRank: (g) => (separable ? g.kh * g.kw : basis === 'shared' ? Math.min(g.N * g.C, g.kh * g.kw) : Math.min(g.N, g.kh * g.kw)),
    macs: (g, rank) => macs(g, rank, separable),
    params(g, rank) {
      const depthwise = separable ? g.C * rank * (g.kh + g.kw) : g.C * rank * g.kh * g.kw;
      return depthwise + g.C * rank * g.N + (g.useBias ? g.N : 0);
    },

    // The optimum of the plain variants; for --separable (rank-1 basis filters, no closed form) it
    // is an optimistic estimate.
    errorCurve(target) {
      const g = target.geometry;
      const D = g.kh * g.kw;
      const energies = new Float64Array(basis === 'shared' ? D : g.C * D);
      const grams = channelGrams(target.kernel, g, basis === 'shared');
      grams.forEach((gram, i) => energies.set(symmetricEigen(gram, D, false).values, i * D));
      // Per channel, rank M keeps the top M energies of every channel: the tail is the sum of each
      // channel's tail, i.e. the sum of the energies at positions ≥ M within each channel.
      const total = energies.reduce((a, v) => a + Math.max(v, 0), 0);
      const full = scheme.fullRank(g);
      const out = new Float64Array(full + 1);
      for (let m = 0; m <= full; m++) {
        let tail = 0;
        for (let c = 0; c < grams.length; c++) {
          const sorted = energies.subarray(c * D, (c + 1) * D);
          for (let i = m; i < D; i++) tail += Math.max(sorted[i], 0);
        }
        out[m] = total > 0 ? Math.sqrt(tail / total) : 0;
      }
      return out;
    },

    factorize(target, rank) {
      const g = target.geometry;
      const f = scheme1Factorize(target.kernel, { kh: g.kh, kw: g.kw, C: g.C, N: g.N }, rank, basis, separable);
      return { target, scheme, rank, bias: target.bias, factors: tfjsFactors(f, g), ...(separable ? { sweeps: f.iterations } : {}) };
    },

    kernelOf(target, factors) {
      const g = target.geometry;
      const { kh, kw, C, N } = g;
      const M = factors[0].shape[3];
      const a = factors[factors.length - 1].values;
      const s = basisAt(factors, g, M, separable);
      const out = new Float32Array(kh * kw * C * N);
      const acc = new Float64Array(N);
      for (let i = 0; i < kh; i++) {
        for (let j = 0; j < kw; j++) {
          for (let c = 0; c < C; c++) {
            acc.fill(0);
            for (let m = 0; m < M; m++) {
              const b = s(i, j, c, m);
              if (b === 0) continue;
              const row = (c * M + m) * N;
              for (let n = 0; n < N; n++) acc[n] += b * a[row + n];
            }
            out.set(acc, ((i * kw + j) * C + c) * N);
          }
        }
      }
      return out;
    },

    layers({ target, rank, factors, bias }) {
      const g = target.geometry;
      const base = target.config;
      if (!separable) {
        // One SeparableConv2D keeps the original name: same strides, dilation, padding, bias, activation.
        return [separableLayer(base, target.name, g, rank, g.useBias, activationOf(base), [factors[0], factors[1], ...biasWeights(bias, g)])];
      }
      return [
        depthwiseLayer(base, `${target.name}${SEPARABLE_PIECES[0]}`, rank, [g.kh, 1], [g.sh, 1], [g.dh, 1], [factors[0]]),
        depthwiseLayer(base, `${target.name}${SEPARABLE_PIECES[1]}`, 1, [1, g.kw], [1, g.sw], [1, g.dw], [factors[1]]),
        conv2dLayer(base, `${target.name}${SEPARABLE_PIECES[2]}`, g.N, [1, 1], [1, 1], [1, 1], g.useBias, activationOf(base), [factors[2], ...biasWeights(bias, g)]),
      ];
    },

    factored: (target, rank) => new Scheme1Form(target, rank, separable),
  };
  return scheme;
}

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

class Scheme1Form implements FactoredForm {
  g: ConvGeometry;
  last: number;
  lastFanIn: number;
  macsPerImage: number;
  priorMacs: number;
  private pad: [Pair, Pair];
  private m: number;
  /** The original kernel per channel: (C, kh·kw, N). */
  private w3: tf.Tensor3D;

  constructor(target: TargetLayer, rank: number, private separable: boolean) {
    const g = (this.g = target.geometry);
    this.pad = paddingOf(g);
    this.m = rank;
    this.last = separable ? 2 : 1;
    this.lastFanIn = g.C * rank;
    this.macsPerImage = macs(g, rank, separable);
    this.priorMacs = 3 * g.C * g.kh * g.kw * rank * g.N;
    this.w3 = tf.tidy(() => tf.tensor4d(target.kernel, [g.kh, g.kw, g.C, g.N]).reshape([g.kh * g.kw, g.C, g.N]).transpose([1, 0, 2]));
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
    const [gram, rhs] = tf.tidy(() => {
      const s = this.basis(f);
      const st = s.transpose([0, 2, 1]);
      return [tf.matMul(st, s), tf.matMul(st, this.w3)]; // (C, M, M), (C, M, N): rows (c, m)
    });
    return { gram: blockDiagonal(toF64(gram), this.g.C, this.m), rhs: toF64(rhs) };
  }

  dispose(): void {
    this.w3.dispose();
  }
}
