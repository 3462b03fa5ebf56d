/**
 * What a factorization scheme is: a plug-in that owns everything about one way of replacing a
 * layer — which layers it applies to, its full and break-even ranks, MACs and parameters at a rank,
 * the filter-reconstruction factorization, the stock tfjs layers that replace the original, and the
 * factored forward pass with its gradients that data reconstruction fits. The pipeline
 * (src/commands/compress.ts), inspect, bench and reconstruction look schemes up in the registry
 * (src/schemes/index.ts) and never guess which scheme made what.
 */
import type * as tf from '@tensorflow/tfjs';
import { conv2dMacs, convGeometry, type ConvGeometry } from '../model/cost.js';
import { relativeError } from './reshape.js';
import type { Basis } from './scheme1-math.js';
import type { LayerInfo } from '../model/layers.js';
import { topologyLayers, type KerasLayerConfig, type ModelTopology } from '../model/topology.js';

export interface WeightValue {
  shape: number[];
  values: Float32Array;
}

/** One stock tfjs layer of a replacement, in Keras JSON form, with its weights in tfjs order. */
export interface NewLayer {
  className: string;
  config: KerasLayerConfig;
  weights: WeightValue[];
}

/** A layer to replace: its saved config, geometry and weights. */
export interface TargetLayer {
  name: string;
  className: string;
  /** The layer's config as saved in model.json (snake_case keys). */
  config: KerasLayerConfig;
  geometry: ConvGeometry;
  /** The kernel in tfjs layout [kh, kw, C, N]. */
  kernel: Float32Array;
  bias: Float32Array | null;
}

/** A layer's replacement at a rank: the factors (tfjs layouts of the new layers' kernels) and bias. */
export interface Factorization {
  target: TargetLayer;
  scheme: Scheme;
  rank: number;
  factors: WeightValue[];
  /** The bias the last new layer carries (the original's, plus any offset data fitting found). */
  bias: Float32Array | null;
  /** Alternating-least-squares sweeps, for schemes that iterate. */
  sweeps?: number;
}

/**
 * A replacement as a differentiable function of its factors (tensors in the factors' layouts):
 * what data reconstruction (src/reconstruct) fits.
 */
export interface FactoredForm {
  g: ConvGeometry;
  /** Linear response (R × N) of the factors on input x (B, inH, inW, C), R = B·outH·outW. */
  forward(x: tf.Tensor4D, f: tf.Tensor[]): tf.Tensor2D;
  /** Sum of squares of E = forward(x) + offset − target (R × N) and the gradients of ½‖E‖². */
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
  /**
   * For schemes whose data optimum has a closed form: statistics of the fitting samples to stream
   * into, solved in one step (data reconstruction then runs no iterative fit for this layer).
   */
  closedForm?(): ClosedFormFit;
  dispose(): void;
}

/** Streamed statistics of one layer's inputs, for its response error curve (see Scheme.responseSpectrum). */
export interface ResponseSpectrum {
  /** Adds a batch of the layer's inputs (B, inH, inW, C). */
  add(x: tf.Tensor4D): void;
  /** Relative error of the best rank-K reconstruction of the responses added, at each rank 0…full. */
  errorCurve(): Float64Array;
}

/** Streamed statistics of one layer's fitting samples; their size does not grow with the samples. */
export interface ClosedFormFit {
  /** Adds a batch: the layer's input x (B, inH, inW, C) and its target response y (R × N). */
  add(x: tf.Tensor4D, y: tf.Tensor2D): void;
  /**
   * The factors (and output offset, with a bias) minimising ½Σ‖Y − Ŷ − o‖² + ½·κμR·‖W − Ŵ‖²
   * (the objective of src/reconstruct/fit.ts), shaped like `start`.
   */
  solve(start: WeightValue[], hasBias: boolean, kappa: number): { factors: WeightValue[]; offset: Float32Array | null };
}

/** The flags that pick a scheme and its variant. */
export interface SchemeOptions {
  /** A registered --scheme name ('1', '2', 'channel'). */
  scheme: string;
  basis: Basis;
  separable: boolean;
}

export interface Scheme {
  /** Id in reports, --json and the output's record, e.g. 'scheme2'. */
  id: string;
  /** The options that create this scheme again (a fit worker rebuilds it from them). */
  recipe: SchemeOptions;
  /** Human description of the variant, e.g. "scheme 1 (shared basis, separable)". */
  label: string;
  /** Why the scheme cannot replace this layer, or null when it can. */
  refuses(layer: LayerInfo): string | null;
  /** Smallest rank that reproduces any kernel of this geometry exactly. */
  fullRank(g: ConvGeometry): number;
  /** MACs per example and parameters of the replacement at `rank` (linear in the rank). */
  macs(g: ConvGeometry, rank: number): number;
  params(g: ConvGeometry, rank: number): number;
  /**
   * Relative filter error ‖W − Ŵ‖_F/‖W‖_F of the best factorization at every rank 0…full rank
   * (index = rank), from the kernel's spectrum: what rank selection trades against MACs.
   */
  errorCurve(target: TargetLayer): Float64Array;
  /**
   * For schemes with a closed-form data fit: statistics of the layer's inputs to stream into, giving
   * the relative error of the best rank-K reconstruction of the layer's response on those inputs.
   */
  responseSpectrum?(target: TargetLayer): ResponseSpectrum;
  /** The filter-reconstruction factors at `rank`. */
  factorize(target: TargetLayer, rank: number): Factorization;
  /** The kernel [kh, kw, C, N] that factors compute (for the filter error). */
  kernelOf(target: TargetLayer, factors: WeightValue[]): Float32Array;
  /** The stock layers that replace the target, named after it, carrying the factors and bias. */
  layers(f: Factorization): NewLayer[];
  /** What `layers` appends to the target's name for each new layer, in order ([] when the one new layer keeps the name). */
  pieceSuffixes: string[];
  /** The factored form for data fitting. */
  factored(target: TargetLayer, rank: number): FactoredForm;
}

/** Largest rank whose replacement costs fewer MACs than the layer (0 if none does). */
export function breakEvenRank(scheme: Scheme, g: ConvGeometry): number {
  return Math.max(0, Math.ceil(conv2dMacs(g) / scheme.macs(g, 1)) - 1);
}

/** Relative errors at ranks 0…n of a truncation that drops the tail of descending energies σ². */
export function tailErrors(sigma2: ArrayLike<number>, fullRank: number): Float64Array {
  const out = new Float64Array(fullRank + 1);
  let total = 0;
  for (let i = 0; i < sigma2.length; i++) total += sigma2[i];
  let tail = total;
  for (let r = 0; r <= fullRank; r++) {
    out[r] = total > 0 ? Math.sqrt(Math.max(tail, 0) / total) : 0;
    if (r < sigma2.length) tail -= sigma2[r];
  }
  return out;
}

/** ‖W − Ŵ‖_F / ‖W‖_F of a factorization's kernel. */
export function filterError(f: Factorization): number {
  return relativeError(f.target.kernel, f.scheme.kernelOf(f.target, f.factors));
}

/** The saved (snake_case) config of layer `name` in a topology. */
function savedConfig(topology: ModelTopology, name: string): KerasLayerConfig {
  const found = topologyLayers(topology).find((l) => l.config?.name === name);
  if (!found) throw new Error(`layer ${name} missing from the saved topology`);
  return found.config;
}

/** The layer as the schemes see it: saved config, geometry and weights. */
export function targetLayer(info: LayerInfo, topology: ModelTopology): TargetLayer {
  const weights = info.layer.getWeights();
  const kernel = weights[0].dataSync() as Float32Array;
  return {
    name: info.name,
    className: info.className,
    config: savedConfig(topology, info.name),
    geometry: convGeometry(info),
    kernel,
    bias: weights.length > 1 ? (weights[1].dataSync() as Float32Array) : null,
  };
}
