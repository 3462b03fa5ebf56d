/**
 * The cost model: multiply-accumulates (MACs) per example, per layer and per model. inspect,
 * compress and bench all take their "theoretical speedup" from here and from each scheme's cost at
 * a rank (src/schemes/), so the three always agree.
 *
 * MACs count the multiply-accumulates of convolutions and dense layers. Element-wise and
 * data-movement layers (activations, batch norm, merges, pooling, reshapes) count as 0: they add
 * well under 1 % to a CNN's MACs and no low-rank scheme changes them.
 */
import { UserError } from '../errors.js';
import type { LayerInfo, Shape } from './layers.js';

/** Layers that cost (nearly) nothing in MACs; anything not here or below is reported as unknown. */
const FREE_LAYERS = new Set([
  'Activation', 'ReLU', 'LeakyReLU', 'PReLU', 'ELU', 'ThresholdedReLU', 'Softmax',
  'Flatten', 'Reshape', 'Permute', 'RepeatVector', 'Masking',
  'Dropout', 'SpatialDropout1D', 'SpatialDropout2D', 'GaussianNoise', 'GaussianDropout', 'AlphaDropout',
  'BatchNormalization', 'LayerNormalization',
  'Add', 'Subtract', 'Multiply', 'Average', 'Maximum', 'Minimum', 'Concatenate', 'Dot',
  'MaxPooling1D', 'MaxPooling2D', 'MaxPooling3D', 'AveragePooling1D', 'AveragePooling2D', 'AveragePooling3D',
  'GlobalAveragePooling1D', 'GlobalAveragePooling2D', 'GlobalMaxPooling1D', 'GlobalMaxPooling2D',
  'ZeroPadding2D', 'Cropping2D', 'UpSampling2D', 'Rescaling', 'CenterCrop', 'Resizing',
]);

const product = (xs: number[]): number => xs.reduce((a, b) => a * b, 1);

/** Geometry of a channels-last 2-D convolution, as one call of the layer sees it. */
export interface ConvGeometry {
  kh: number; kw: number;
  sh: number; sw: number;
  dh: number; dw: number;
  padding: 'same' | 'valid';
  inH: number; inW: number; C: number;
  outH: number; outW: number; N: number;
  useBias: boolean;
}

const pair = (v: number | number[] | undefined, fallback: number): [number, number] =>
  v === undefined ? [fallback, fallback] : Array.isArray(v) ? [v[0], v.length > 1 ? v[1] : v[0]] : [v, v];

const dim = (shape: Shape, i: number, what: string): number => {
  const v = shape[i];
  if (v === null || v === undefined) throw new UserError(`${what} has an undefined dimension (${JSON.stringify(shape)}); give the model a fixed input size`);
  return v;
};

/**
 * The positions a layer input holds, as a height × width grid: a 4-D input's own; otherwise every
 * axis between batch and channels flattened into the height (width 1). This is how a Dense layer
 * reads as a 1×1 conv: [B, C] is one position, [B, T, C] is T.
 */
export function positionGrid(shape: Shape): [Shape[number], Shape[number]] {
  if (shape.length === 4) return [shape[1], shape[2]];
  const middle = shape.slice(1, -1);
  return [middle.some((v) => v === null || v === undefined) ? null : product(middle as number[]), 1];
}

/**
 * The geometry of a Conv2D, DepthwiseConv2D or SeparableConv2D layer from its config and shapes,
 * or of a Dense layer read as a 1×1 conv over its positions (its kernel [C, N] holds the same
 * values as [1, 1, C, N]).
 */
export function convGeometry(layer: LayerInfo, call = 0): ConvGeometry {
  const c = layer.config;
  if (layer.className === 'Dense') return denseGeometry(layer, call);
  if (!['channelsLast', 'channels_last'].includes(c.dataFormat ?? 'channelsLast')) {
    throw new UserError(`layer ${layer.name}: channels_first convolutions are not supported`);
  }
  const { inputShapes, outputShapes } = layer.calls[call];
  const input = inputShapes[0];
  const output = outputShapes[0];
  const [kh, kw] = pair(c.kernelSize, 1);
  const [sh, sw] = pair(c.strides, 1);
  const [dh, dw] = pair(c.dilationRate, 1);
  const what = `layer ${layer.name}`;
  return {
    kh, kw, sh, sw, dh, dw,
    padding: c.padding === 'same' ? 'same' : 'valid',
    inH: dim(input, 1, what), inW: dim(input, 2, what), C: dim(input, 3, what),
    outH: dim(output, 1, what), outW: dim(output, 2, what), N: dim(output, 3, what),
    useBias: c.useBias ?? true,
  };
}

function denseGeometry(layer: LayerInfo, call: number): ConvGeometry {
  const { inputShapes, outputShapes } = layer.calls[call];
  const input = inputShapes[0];
  const what = `layer ${layer.name}`;
  const grid = positionGrid(input);
  const h = dim(grid, 0, what);
  const w = dim(grid, 1, what);
  return {
    kh: 1, kw: 1, sh: 1, sw: 1, dh: 1, dw: 1, padding: 'valid',
    inH: h, inW: w, C: dim(input, input.length - 1, what),
    outH: h, outW: w, N: dim(outputShapes[0], outputShapes[0].length - 1, what),
    useBias: layer.config.useBias ?? true,
  };
}

export function conv2dMacs(g: ConvGeometry): number {
  return g.outH * g.outW * g.N * g.kh * g.kw * g.C;
}

/** MACs of one call of a layer, or null when the cost model does not know the layer. */
function callMacs(layer: LayerInfo, call: number): number | null {
  const { inputShapes, outputShapes } = layer.calls[call];
  const c = layer.config;
  const known = (s: Shape) => s.slice(1).map((v) => v ?? 1) as number[];
  switch (layer.className) {
    case 'Conv2D':
      return conv2dMacs(convGeometry(layer, call));
    case 'DepthwiseConv2D': {
      const g = convGeometry(layer, call);
      return g.outH * g.outW * g.N * g.kh * g.kw; // N = C·depthMultiplier outputs, one kh×kw filter each
    }
    case 'SeparableConv2D': {
      const g = convGeometry(layer, call);
      // getConfig() of a tfjs SeparableConv2D omits the multiplier; the layer knows it.
      const m = (layer.layer as any).depthMultiplier ?? c.depthMultiplier ?? 1;
      return g.outH * g.outW * g.C * m * (g.kh * g.kw + g.N);
    }
    case 'Conv2DTranspose': {
      const inp = known(inputShapes[0]);
      const out = known(outputShapes[0]);
      const [kh, kw] = pair(c.kernelSize, 1);
      return inp[0] * inp[1] * inp[2] * kh * kw * out[2];
    }
    case 'Conv1D': {
      const inp = known(inputShapes[0]);
      const out = known(outputShapes[0]);
      const [k] = pair(c.kernelSize, 1);
      return out[0] * out[1] * k * inp[1];
    }
    case 'Conv3D': {
      const inp = known(inputShapes[0]);
      const out = known(outputShapes[0]);
      const k = (c.kernelSize) as number[] | number;
      const ks = Array.isArray(k) ? k : [k, k, k];
      return product(out) * product(ks) * inp[3];
    }
    case 'Dense': {
      const inp = known(inputShapes[0]);
      const out = known(outputShapes[0]);
      return product(inp) * out[out.length - 1];
    }
    case 'Embedding':
      return 0;
    default:
      return FREE_LAYERS.has(layer.className) ? 0 : null;
  }
}

/** MACs per example of a layer over all its calls, or null when unknown. */
export function layerMacs(layer: LayerInfo): number | null {
  let total = 0;
  for (let i = 0; i < layer.calls.length; i++) {
    const m = callMacs(layer, i);
    if (m === null) return null;
    total += m;
  }
  return total;
}

/** Sum of known MACs and the names of layers whose cost is unknown. */
export function modelMacs(layers: LayerInfo[]): { total: number; unknown: string[] } {
  let total = 0;
  const unknown: string[] = [];
  for (const layer of layers) {
    const m = layerMacs(layer);
    if (m === null) unknown.push(layer.name);
    else total += m;
  }
  return { total, unknown };
}
