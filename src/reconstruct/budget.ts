/**
 * What data reconstruction will cost on a given model, worked out before any slow work:
 *
 *  - the wasm heap: what lives on the backend at once (the weights of the networks held, images
 *    kept as tensors, one batch of a forward pass, one batch of a layer's exact solve), planned from
 *    the model's own activation sizes against the heap's 4 GB cap, and refused up front with the
 *    --batch or --samples that would fit, instead of an abort midway; a fine-tuning step is planned
 *    from one step measured on one image (`planFinetuneHeap`);
 *  - the work: default --samples and Adam steps as budgets of multiply-accumulates that shrink on
 *    big models, whether the joint rank search is affordable, and the time it all should take at
 *    the speed the backend showed on the model's own forward pass.
 */
import * as tf from '@tensorflow/tfjs';
import { performance } from 'node:perf_hooks';
import { modelMacs } from '../model/cost.js';
import { UserError } from '../errors.js';
import { listLayers, type LayerInfo } from '../model/layers.js';
import { targetLayer, type Scheme } from '../schemes/index.js';
import { DEFAULT_CACHE_BYTES } from '../data/store.js';
import { SHARD_IMAGES } from './shards.js';
import type { ModelTopology } from '../model/topology.js';

/** The wasm backend's heap can grow to 4 GiB (32-bit addresses)… */
export const WASM_HEAP_BYTES = 4 * 1024 ** 3;
/**
 * …of which a plan uses at most this much: the heap never shrinks, and freed blocks of one size do
 * not always serve a request of another.
 */
export const HEAP_PLAN_BYTES = 3 * 1024 ** 3;

/** One replaced layer as the budget sees it. */
export interface LayerCost {
  name: string;
  /** Values per image of the layer's input, of its output, and of the last factor's design matrix. */
  inputValues: number;
  outputValues: number;
  designValues: number;
  /** MACs per image of the original layer and of its replacement. */
  originalMacs: number;
  factoredMacs: number;
  /** MACs of one evaluation of the filter objective (Adam's prior). */
  priorMacs: number;
  /** Fitted in closed form (no Adam steps). */
  closedForm: boolean;
  /** MACs per image of the layer's input covariance (what the response spectra accumulate). */
  covarianceMacs: number;
}

/** The costs of replacing `ranked` layers (each at its rank) on `topology`. */
export function layerCosts(ranked: { info: LayerInfo; scheme: Scheme; rank: number }[], topology: ModelTopology): LayerCost[] {
  return ranked.map(({ info, scheme, rank }) => {
    const target = targetLayer(info, topology);
    const form = scheme.factored(target, rank);
    const g = target.geometry;
    const positions = g.outH * g.outW;
    const cost = {
      name: info.name,
      inputValues: g.inH * g.inW * g.C,
      outputValues: positions * g.N,
      designValues: positions * form.lastFanIn,
      originalMacs: positions * g.N * g.kh * g.kw * g.C,
      factoredMacs: form.macsPerImage,
      priorMacs: form.priorMacs,
      closedForm: form.closedForm !== undefined,
      covarianceMacs: g.inH * g.inW * g.C * g.C,
    };
    form.dispose();
    return cost;
  });
}

const product = (shape: (number | null)[]) => shape.slice(1).reduce((a: number, b) => a * (b ?? 1), 1);

/** Per image, the most values one layer call reads and writes at once in `model`. */
export function largestCallValues(model: tf.LayersModel): number {
  const calls = listLayers(model).flatMap((l) => l.calls);
  return Math.max(...calls.map((c) => [...c.inputShapes, ...c.outputShapes].reduce((a, s) => a + product(s), 0)));
}

/** Bytes of one image's solve pass for a layer: its input, output, and the design matrix with the copies its patches take. */
const solveBytesPerImage = (l: LayerCost) => 4 * (l.inputValues + 3 * l.outputValues + 3 * l.designValues);
/** Bytes of one image of an Adam shard (forward and gradients: ~4 copies of input and output). */
const stepBytesPerImage = (l: LayerCost) => 16 * (l.inputValues + l.outputValues);

export interface HeapPlan {
  /** Bytes of each part at its peak. */
  weights: number;
  held: number;
  forward: number;
  layer: { name: string; bytes: number } | null;
  total: number;
}

const gb = (bytes: number) => `${(bytes / 1024 ** 3).toFixed(1)} GB`;

/** `batch` halved until `bytes` of it fit HEAP_PLAN_BYTES, or down to 1. */
function halvedToFit(batch: number, bytes: (batch: number) => number): number {
  while (batch > 1 && bytes(batch) > HEAP_PLAN_BYTES) batch = Math.floor(batch / 2);
  return batch;
}

/**
 * The wasm heap a data fit of `layers` needs with `batch` images per exact-solve batch, `heldImages`
 * images kept as tensors throughout (the joint rank search's scoring images), `networks` copies
 * of the weights (the original, the data-fitted and the filter-only model), and forward passes of
 * `forwardBatch` images; `adam` says which layers run Adam steps. Throws a UserError naming a --batch or --samples that fits when it would
 * not fit in HEAP_PLAN_BYTES.
 */
export function planHeap(
  model: tf.LayersModel, layers: LayerCost[], options: { batch: number; heldImages: number; forwardBatch: number; networks: number; adam: (l: LayerCost) => boolean },
): HeapPlan {
  const weights = options.networks * 4 * model.countParams();
  const inputBytes = 4 * product(model.inputs[0].shape);
  const held = options.heldImages * inputBytes;
  // A layer call's inputs and outputs, and the frontier's copies of the tensors crossing the cut.
  const forward = options.forwardBatch * 3 * 4 * largestCallValues(model);
  // Adam's shards hold at most SHARD_IMAGES of the images the layer's sample cache holds.
  const shard = (l: LayerCost) => Math.min(SHARD_IMAGES, options.batch, Math.floor(DEFAULT_CACHE_BYTES / (4 * (l.inputValues + l.outputValues))));
  const layerBytes = (l: LayerCost, batch: number) => Math.max(batch * solveBytesPerImage(l), options.adam(l) ? shard(l) * stepBytesPerImage(l) : 0);
  const worst = (batch: number) => layers.reduce<{ name: string; bytes: number } | null>((w, l) => {
    const bytes = layerBytes(l, batch);
    return !w || bytes > w.bytes ? { name: l.name, bytes } : w;
  }, null);
  const total = (batch: number, heldBytes: number) => weights + heldBytes + Math.max(forward, worst(batch)?.bytes ?? 0);
  const plan = { weights, held, forward, layer: worst(options.batch), total: total(options.batch, held) };
  if (plan.total <= HEAP_PLAN_BYTES) return plan;
  const needs = `data reconstruction would need ~${gb(plan.total)} of the wasm backend's heap, more than the ${gb(HEAP_PLAN_BYTES)} it can safely use (it holds ${gb(WASM_HEAP_BYTES)} at most and never shrinks)`;
  // What would fit: a smaller solve batch, or fewer images kept.
  const batch = halvedToFit(options.batch, (b) => total(b, held));
  if (batch < options.batch && total(batch, held) <= HEAP_PLAN_BYTES) {
    throw new UserError(`--batch ${options.batch}: ${needs} (layer ${plan.layer!.name} at ${options.batch} images a batch); give --batch ${batch} or less`);
  }
  const room = HEAP_PLAN_BYTES - total(options.batch, 0);
  if (held > 0 && room > inputBytes) {
    const images = Math.floor(room / inputBytes);
    throw new UserError(`--samples: ${needs} (${options.heldImages} scoring images kept for the rank search); give --samples ${images * 5} or less`);
  }
  throw new UserError(`${needs} even at one image a batch; compress it without --data`);
}

/**
 * Refuses `--finetune` up front on the wasm backend when a training step of `batch` images would
 * not fit its heap, naming a --batch that would (fine-tuning steps take --batch images).
 *
 * `step` is one training step measured on a single image (train/finetune.ts, `measureStep`): the
 * tensors resident before it, and the peak during it. Everything the step adds is counted per image
 * (a little too much: some of it does not grow with the batch). Measured rather than modelled from
 * the layer outputs: what tfjs' tape keeps per layer depends on the model (on Teachable Machine's
 * MobileNetV2 0.35 it is 3.9 times the layers' outputs, on the width-1.0 one 2.2 times).
 */
export function planFinetuneHeap(step: { resident: number; peak: number }, batch: number): void {
  const perImage = Math.max(0, step.peak - step.resident);
  // The student and Adam's two moments of what trains: at most three more copies of the weights.
  const bytes = (b: number) => 4 * step.resident + b * perImage;
  if (bytes(batch) <= HEAP_PLAN_BYTES) return;
  const needs = `--finetune: a training step of ${batch} images would hold ~${gb(bytes(batch))} of the wasm backend's heap (measured on a step of one image: ${(perImage / 1024 ** 2).toFixed(0)} MB an image, kept for the backward pass), more than the ${gb(HEAP_PLAN_BYTES)} it can safely use`;
  const fits = halvedToFit(batch, bytes);
  if (bytes(fits) <= HEAP_PLAN_BYTES) throw new UserError(`${needs}; give --batch ${fits} or less (fine-tuning steps take --batch images)`);
  throw new UserError(`${needs} even at one image a step; compress without --finetune`);
}

/**
 * Default --samples: 1000 fitting images, or as many as SAMPLE_MACS of forward passes through the
 * model allow (an InceptionV3 at 5.7 GMACs an image: 350).
 */
export const MAX_SAMPLES = 1000;
export const SAMPLE_MACS = 2e12;

export function budgetSamples(model: tf.LayersModel): number {
  const macs = modelMacs(listLayers(model)).total;
  return Math.max(2, Math.min(MAX_SAMPLES, Math.floor(SAMPLE_MACS / Math.max(macs, 1))));
}

/**
 * Adam's MACs over all the layers of one fit: each layer gets the per-layer budget of fit.ts, or
 * this shared among the layers when they are many (94 convolutions of an InceptionV3: 13 GMACs each).
 */
export const MODEL_STEP_MACS = 1.2e12;

export function layerStepBudget(layers: number, perLayer: number): number {
  return Math.min(perLayer, MODEL_STEP_MACS / Math.max(1, layers));
}

/**
 * The joint rank search (plan/joint-search.ts, planByJointSearch) fits whole allocations and keeps
 * the one whose fitted model is closest to the original on fitting images set aside. With up to
 * SEARCH_MAX_LAYERS layers it moves rank between pairs of them ('moves'); with more, a handful of
 * moves means nothing, and it compares allocations of every layer ('compare': equal fractions, the
 * spectra's, equal fractions over the layers the spectra keep), when every layer is fitted in
 * closed form (1×1 convs and Dense layers: a MobileNet's), whose fits are cheap. SEARCH_FITS bounds
 * the fits of each. It runs when they stay within SEARCH_MACS; otherwise the ranks come from the
 * spectra.
 */
export type SearchMode = 'moves' | 'compare';
export const SEARCH_FITS: Record<SearchMode, number> = { moves: 5, compare: 3 };
export const SEARCH_MACS = 3e12;
export const SEARCH_MAX_LAYERS = 12;

/** How the joint search goes about `layers`, or why it does not. */
export function searchMode(layers: LayerCost[]): SearchMode | string {
  if (layers.length <= SEARCH_MAX_LAYERS) return 'moves';
  if (layers.every((l) => l.closedForm)) return 'compare';
  return `${layers.length} layers are too many for moves of rank between pairs, and not all are fitted in closed form for a comparison of whole allocations`;
}

/** Multiply-accumulates of the stages of one compress --data run (see `estimateWork`). */
export interface Work {
  /** One data fit on the fitting images. */
  fit: number;
  /** The joint rank search (0 when it does not run). */
  search: number;
  /** The layers' response spectra (plan/responses.ts; 0 when they are not measured). */
  responses: number;
  /** The held-out evaluation (three networks). */
  evaluate: number;
}

/**
 * The MACs of a run: collecting each layer's samples runs both networks once over the fitting
 * images; each layer then computes the original response, and its solve and check passes ~3
 * forward passes of the replacement; Adam runs ~4 forward passes of a minibatch a step. The
 * response spectra run the original over `images.responses` images and accumulate each layer's
 * input covariance.
 */
export function estimateWork(
  model: tf.LayersModel, layers: LayerCost[], images: { fit: number; holdout: number; score: number; responses: number },
  steps: (l: LayerCost) => number, batch: number, searchFits: number,
): Work {
  const original = modelMacs(listLayers(model)).total;
  const compressed = original - layers.reduce((s, l) => s + l.originalMacs - l.factoredMacs, 0);
  const fitOn = (n: number) => n * (original + compressed) + layers.reduce((s, l) => s + n * (l.originalMacs + 3 * l.factoredMacs) + steps(l) * 4 * batch * l.factoredMacs, 0);
  return {
    fit: fitOn(images.fit),
    search: searchFits ? searchFits * (fitOn(images.fit - images.score) + images.score * compressed) + images.score * original : 0,
    evaluate: images.holdout * (original + 2 * compressed),
    responses: images.responses * (original + layers.reduce((s, l) => s + l.covarianceMacs, 0)),
  };
}

/** At most this many multiply-accumulates in one timed pass of `forwardPace` (~1–5 s on 2 cores). */
const PACE_PASS_MACS = 10e9;

/**
 * Multiply-accumulates a second of the model's forward pass in batches (as the fits run it), timed
 * on a blank batch of up to `batch` images: the second of two passes, since the first sets up the
 * backend's kernels for that shape. A pass stays under PACE_PASS_MACS.
 */
export async function forwardPace(model: tf.LayersModel, macsPerImage: number, batch: number): Promise<number> {
  const n = Math.max(1, Math.min(batch, Math.floor(PACE_PASS_MACS / Math.max(1, macsPerImage))));
  const x = tf.zeros([n, ...model.inputs[0].shape.slice(1).map((d) => d ?? 1)]);
  const pass = async () => {
    const ys = [model.predict(x)].flat();
    await Promise.all(ys.map((y) => y.data()));
    tf.dispose(ys);
  };
  try {
    await pass();
    const started = performance.now();
    await pass();
    return (n * macsPerImage) / Math.max(1e-3, (performance.now() - started) / 1000);
  } finally {
    x.dispose();
  }
}

/** Why the joint rank search's `fits` fits, of `searchMacs` multiply-accumulates in all, are not affordable, or null. */
export function searchUnaffordable(searchMacs: number, fits: number): string | null {
  return searchMacs > SEARCH_MACS ? `its ${fits} fits would take ~${(searchMacs / 1e12).toFixed(1)} T multiply-accumulates` : null;
}
