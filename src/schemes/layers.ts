/**
 * Keras-style (snake_case) configs of the stock tfjs layers that replacements are made of, as they
 * appear in a saved model.json topology. Each new layer inherits what must not change (dtype,
 * data format, padding, trainability) from the layer it replaces — and nothing else, e.g. not a
 * stray batch_input_shape.
 */
import type { ConvGeometry } from '../model/cost.js';
import type { KerasLayerConfig } from '../model/topology.js';
import type { NewLayer, WeightValue } from './scheme.js';

/** Config keys a replacement layer inherits from the layer it replaces. */
const INHERITED = ['trainable', 'dtype', 'data_format', 'padding'];

function inherit(base: KerasLayerConfig): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const key of INHERITED) if (base[key] !== undefined) out[key] = base[key];
  return out;
}

/** The config without undefined entries (a saved model may lack e.g. an initializer). */
function defined(config: KerasLayerConfig): KerasLayerConfig {
  return Object.fromEntries(Object.entries(config).filter(([, v]) => v !== undefined)) as KerasLayerConfig;
}

export type Pair = [number, number];

export const activationOf = (base: KerasLayerConfig): string => (base.activation ?? 'linear') as string;

export function biasWeights(bias: Float32Array | null, g: ConvGeometry): WeightValue[] {
  return bias ? [{ shape: [g.N], values: bias }] : [];
}

export function conv2dLayer(
  base: KerasLayerConfig, name: string, filters: number, kernel: Pair, strides: Pair,
  dilation: Pair, useBias: boolean, activation: string | null, weights: WeightValue[],
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

export function depthwiseLayer(
  base: KerasLayerConfig, name: string, multiplier: number, kernel: Pair, strides: Pair,
  dilation: Pair, weights: WeightValue[],
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

export function separableLayer(
  base: KerasLayerConfig, name: string, g: ConvGeometry, multiplier: number, useBias: boolean, activation: string, weights: WeightValue[],
): NewLayer {
  return {
    className: 'SeparableConv2D',
    config: defined({
      ...inherit(base), name, filters: g.N, kernel_size: [g.kh, g.kw], strides: [g.sh, g.sw],
      dilation_rate: [g.dh, g.dw], depth_multiplier: multiplier, activation, use_bias: useBias,
      depthwise_initializer: base.kernel_initializer, pointwise_initializer: base.kernel_initializer,
      bias_initializer: base.bias_initializer, depthwise_regularizer: null, pointwise_regularizer: null,
      bias_regularizer: null, activity_regularizer: base.activity_regularizer ?? null,
      depthwise_constraint: null, pointwise_constraint: null, bias_constraint: null,
    }),
    weights,
  };
}

export function denseLayer(
  base: KerasLayerConfig, name: string, units: number, useBias: boolean, activation: string | null, weights: WeightValue[],
): NewLayer {
  return {
    className: 'Dense',
    config: defined({
      ...inherit(base), name, units, activation: activation ?? 'linear', use_bias: useBias,
      kernel_initializer: base.kernel_initializer, bias_initializer: base.bias_initializer,
      kernel_regularizer: null, bias_regularizer: null, activity_regularizer: useBias ? (base.activity_regularizer ?? null) : null,
      kernel_constraint: null, bias_constraint: null,
    }),
    weights,
  };
}
