/**
 * The factorization schemes as plug-ins: each knows its full rank and cost (from the cost model)
 * and turns one Conv2D into the stock tfjs layers that replace it, with their weights.
 * Layer configs are Keras-style (snake_case), as they appear in a saved model.json topology.
 */
import {
  scheme1BreakEvenRank, scheme1FullRank, scheme1Macs, scheme1Params,
  scheme2BreakEvenRank, scheme2FullRank, scheme2Macs, scheme2Params, type Basis, type ConvGeometry,
} from './cost.js';
import { UserError } from './errors.js';
import { relativeError, type KernelDims } from './factorize/reshape.js';
import { scheme1Factorize, scheme1Kernel, type Scheme1Factors } from './factorize/scheme1.js';
import { scheme2Factorize, scheme2Kernel, type Scheme2Factors } from './factorize/scheme2.js';

/** A Conv2D to replace: its saved config and weights. */
export interface ConvLayer {
  name: string;
  /** The layer's config as saved in model.json (snake_case keys). */
  config: Record<string, any>;
  geometry: ConvGeometry;
  kernel: Float32Array;
  bias: Float32Array | null;
}

export interface WeightValue {
  shape: number[];
  values: Float32Array;
}

/** One stock tfjs layer of a replacement, in Keras JSON form, with its weights in tfjs order. */
export interface NewLayer {
  className: string;
  config: Record<string, any>;
  weights: WeightValue[];
}

export interface Replacement {
  layers: NewLayer[];
  /** ‖W − Ŵ‖_F / ‖W‖_F of the kernel the new layers compute. */
  filterError: number;
  /** Scheme 1 separable: ALS sweeps run. */
  iterations?: number;
}

export interface SchemeOptions {
  scheme: 1 | 2;
  basis: Basis;
  separable: boolean;
}

export interface Scheme {
  /** 'scheme1' or 'scheme2', as reported. */
  id: string;
  /** Human description of the variant, e.g. "scheme 1 (shared basis, separable)". */
  label: string;
  fullRank(g: ConvGeometry): number;
  breakEvenRank(g: ConvGeometry): number;
  macs(g: ConvGeometry, rank: number): number;
  params(g: ConvGeometry, rank: number): number;
  replace(conv: ConvLayer, rank: number): Promise<Replacement>;
}

const dimsOf = (g: ConvGeometry): KernelDims => ({ kh: g.kh, kw: g.kw, C: g.C, N: g.N });

/** Config keys a replacement layer inherits from the layer it replaces. */
const INHERITED = ['trainable', 'dtype', 'data_format', 'padding'];

function inherit(base: Record<string, any>): Record<string, any> {
  const out: Record<string, any> = {};
  for (const key of INHERITED) if (base[key] !== undefined) out[key] = base[key];
  return out;
}

/** The config without undefined entries (a saved model may lack e.g. an initializer). */
function defined(config: Record<string, any>): Record<string, any> {
  return Object.fromEntries(Object.entries(config).filter(([, v]) => v !== undefined));
}

function conv2dLayer(
  base: Record<string, any>, name: string, filters: number, kernel: [number, number], strides: [number, number],
  dilation: [number, number], useBias: boolean, activation: string | null, weights: WeightValue[],
): NewLayer {
  return {
    className: 'Conv2D',
    config: defined({
      ...inherit(base), name, filters, kernel_size: kernel, strides, dilation_rate: dilation,
      activation: activation ?? 'linear', use_bias: useBias,
      kernel_initializer: base.kernel_initializer, bias_initializer: base.bias_initializer,
      kernel_regularizer: null, bias_regularizer: null, activity_regularizer: useBias ? (base.activity_regularizer ?? null) : null,
      kernel_constraint: null, bias_constraint: null,
    }),
    weights,
  };
}

function depthwiseLayer(
  base: Record<string, any>, name: string, multiplier: number, kernel: [number, number], strides: [number, number],
  dilation: [number, number], weights: WeightValue[],
): NewLayer {
  return {
    className: 'DepthwiseConv2D',
    config: defined({
      ...inherit(base), name, kernel_size: kernel, strides, dilation_rate: dilation, depth_multiplier: multiplier,
      activation: 'linear', use_bias: false, depthwise_initializer: base.kernel_initializer, bias_initializer: base.bias_initializer,
      depthwise_regularizer: null, bias_regularizer: null, activity_regularizer: null, depthwise_constraint: null, bias_constraint: null,
    }),
    weights,
  };
}

const activationOf = (base: Record<string, any>): string => base.activation ?? 'linear';

function biasWeights(conv: ConvLayer): WeightValue[] {
  return conv.bias ? [{ shape: [conv.geometry.N], values: conv.bias }] : [];
}

export const scheme2: Scheme = {
  id: 'scheme2',
  label: 'scheme 2 (kh×1 then 1×kw)',
  fullRank: scheme2FullRank,
  breakEvenRank: scheme2BreakEvenRank,
  macs: scheme2Macs,
  params: scheme2Params,
  async replace(conv, rank) {
    const g = conv.geometry;
    const d = dimsOf(g);
    const f: Scheme2Factors = await scheme2Factorize(conv.kernel, d, rank);
    const base = conv.config;
    return {
      filterError: relativeError(conv.kernel, scheme2Kernel(f, d)),
      layers: [
        conv2dLayer(base, `${conv.name}_v`, rank, [g.kh, 1], [g.sh, 1], [g.dh, 1], false, null,
          [{ shape: [g.kh, 1, g.C, rank], values: f.vertical }]),
        conv2dLayer(base, `${conv.name}_h`, g.N, [1, g.kw], [1, g.sw], [1, g.dw], g.useBias, activationOf(base),
          [{ shape: [1, g.kw, rank, g.N], values: f.horizontal }, ...biasWeights(conv)]),
      ],
    };
  },
};

/** Scheme 1 factors as tfjs weights: depthwise [kh,kw,C,M] and pointwise [1,1,C·M,N]. */
function scheme1Weights(f: Scheme1Factors, g: ConvGeometry) {
  const { kh, kw, C, N } = g;
  const D = kh * kw;
  const M = f.rank;
  const depthwise = new Float32Array(D * C * M);
  for (let c = 0; c < C; c++) {
    for (let m = 0; m < M; m++) {
      for (let t = 0; t < D; t++) depthwise[(t * C + c) * M + m] = f.basisFilters[(c * M + m) * D + t];
    }
  }
  const pointwise = Float32Array.from(f.coeff);
  let vertical: Float32Array | null = null;
  let horizontal: Float32Array | null = null;
  if (f.p && f.q) {
    vertical = new Float32Array(kh * C * M);
    horizontal = new Float32Array(kw * C * M);
    for (let c = 0; c < C; c++) {
      for (let m = 0; m < M; m++) {
        for (let i = 0; i < kh; i++) vertical[(i * C + c) * M + m] = f.p[(c * M + m) * kh + i];
        for (let j = 0; j < kw; j++) horizontal[j * C * M + c * M + m] = f.q[(c * M + m) * kw + j];
      }
    }
  }
  return { depthwise, pointwise, vertical, horizontal };
}

export function scheme1(basis: Basis, separable: boolean): Scheme {
  return {
    id: 'scheme1',
    label: `scheme 1 (${basis} basis${separable ? ', separable' : ''})`,
    fullRank: (g) => scheme1FullRank(g, basis, separable),
    breakEvenRank: (g) => scheme1BreakEvenRank(g, separable),
    macs: (g, rank) => scheme1Macs(g, rank, separable),
    params: (g, rank) => scheme1Params(g, rank, separable),
    async replace(conv, rank) {
      const g = conv.geometry;
      if (separable && (g.dh > 1 || g.dw > 1)) {
        throw new UserError(
          `${conv.name} is dilated, and tfjs' DepthwiseConv2D ignores dilation, so --separable cannot realise it; use --scheme 2, or --scheme 1 without --separable`,
        );
      }
      const d = dimsOf(g);
      const f = scheme1Factorize(conv.kernel, d, rank, basis, separable);
      const w = scheme1Weights(f, g);
      const base = conv.config;
      const filterError = relativeError(conv.kernel, scheme1Kernel(f, d));
      if (!separable) {
        // One SeparableConv2D keeps the original name: same strides, dilation, padding, bias, activation.
        return {
          filterError,
          layers: [{
            className: 'SeparableConv2D',
            config: defined({
              ...inherit(base), name: conv.name, filters: g.N, kernel_size: [g.kh, g.kw], strides: [g.sh, g.sw],
              dilation_rate: [g.dh, g.dw], depth_multiplier: rank, activation: activationOf(base), use_bias: g.useBias,
              depthwise_initializer: base.kernel_initializer, pointwise_initializer: base.kernel_initializer,
              bias_initializer: base.bias_initializer, depthwise_regularizer: null, pointwise_regularizer: null,
              bias_regularizer: null, activity_regularizer: base.activity_regularizer ?? null,
              depthwise_constraint: null, pointwise_constraint: null, bias_constraint: null,
            }),
            weights: [
              { shape: [g.kh, g.kw, g.C, rank], values: w.depthwise },
              { shape: [1, 1, g.C * rank, g.N], values: w.pointwise },
              ...biasWeights(conv),
            ],
          }],
        };
      }
      return {
        filterError,
        iterations: f.iterations,
        layers: [
          depthwiseLayer(base, `${conv.name}_v`, rank, [g.kh, 1], [g.sh, 1], [g.dh, 1], [{ shape: [g.kh, 1, g.C, rank], values: w.vertical! }]),
          depthwiseLayer(base, `${conv.name}_h`, 1, [1, g.kw], [1, g.sw], [1, g.dw], [{ shape: [1, g.kw, g.C * rank, 1], values: w.horizontal! }]),
          conv2dLayer(base, `${conv.name}_p`, g.N, [1, 1], [1, 1], [1, 1], g.useBias, activationOf(base),
            [{ shape: [1, 1, g.C * rank, g.N], values: w.pointwise }, ...biasWeights(conv)]),
        ],
      };
    },
  };
}

export function schemeFor(options: SchemeOptions): Scheme {
  return options.scheme === 2 ? scheme2 : scheme1(options.basis, options.separable);
}
