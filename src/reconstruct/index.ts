/**
 * Data reconstruction (Jaderberg et al. 2014, eq. 4), the pipeline's optional fourth stage: each
 * replaced layer, in network order, is fitted to reproduce the original layer's linear response on
 * sample images, starting from its filter-reconstruction factors (fit.ts).
 *
 * - Non-joint: the factors see the layer's input in the original network (Φ̃ = Φ).
 * - Joint: they see its input in the compressed network whose earlier replaced layers already carry
 *   their data-reconstructed factors; the target stays the original network's response, so each
 *   layer also corrects the error of the ones before it.
 *
 * Factorizations come in and go out as plain data; the compressed network the joint fit runs
 * through is built once and becomes the data-reconstructed model. Held-out evaluation (heldout.ts)
 * compares that model with the filter-only one side by side.
 */
import * as tf from '@tensorflow/tfjs';
import { performance } from 'node:perf_hooks';
import { backendThreads } from '../runtime/backend.js';
import type { ClassList, PixelOptions } from '../data/images.js';
import { listLayers } from '../model/layers.js';
import type { Factorization, WeightValue } from '../schemes/index.js';
import { DEFAULT_CACHE_BYTES, FRONTIER_BUDGET, fromImage, ImageStore, LayerCache, type SampleSource } from '../data/store.js';
import { layerStepBudget } from './budget.js';
import { AUTO_STEP_MACS, DEFAULT_FIT, fitClosedForm, fitLayer } from './fit.js';
import { linearResponse } from '../linalg/conv-ops.js';
import type { Reporter } from '../report/progress.js';
import { frontierThrough, type Frontier } from './segments.js';
import { SHARD_IMAGES, shardPool } from './shards.js';
import type { ModelSource, ModelTopology } from '../model/topology.js';
import { buildCompressed } from '../model/rewrite.js';

export { silentReporter, stderrReporter, type Reporter } from '../report/progress.js';

export interface ReconstructOptions {
  /** Folder of sample images (one subfolder per class for accuracy). */
  data: string;
  /** Held-out folder; default: a `holdout` fraction of `data`. */
  evalData?: string;
  holdout: number;
  /** At most this many fitting images; 'auto': as many as the model's cost allows (budget.ts budgetSamples). */
  samples: number | 'auto';
  joint: boolean;
  /** Adam steps per layer, or 'auto' (see fit.ts). */
  iterations: number | 'auto';
  batch: number;
  seed: number;
  pixels: PixelOptions;
  /** A --labels file or a class list (e.g. from metadata.json); default: sorted subfolder names. */
  labels?: string | ClassList;
  /** Byte budget of the per-layer sample cache. */
  cacheBytes?: number;
  /** Filter-prior weight and Adam step (see fit.ts). */
  kappa?: number;
  lr?: number;
}

export const DEFAULT_RECONSTRUCT = {
  holdout: 0.2,
  samples: 'auto' as number | 'auto',
  joint: true,
  iterations: DEFAULT_FIT.iterations as number | 'auto',
  batch: DEFAULT_FIT.batch,
  seed: 1,
};

export interface LayerFit {
  name: string;
  /** 'filter' when data reconstruction did not beat the filter reconstruction on the fitting images. */
  kept: 'data' | 'filter';
  /** Relative output error on the fitting images (through the network being fitted). */
  fitError: { filter: number; data: number };
  /** Adam steps run. */
  steps: number;
  seconds: number;
}

export interface DataFit {
  /** The data-reconstructed factorizations, in the order given. */
  fitted: Factorization[];
  /** The compressed model carrying them. */
  model: tf.LayersModel;
  topology: ModelTopology;
  layers: LayerFit[];
  seconds: number;
}

export function weightValue(t: tf.Tensor): WeightValue {
  return { shape: t.shape.slice(), values: Float32Array.from(t.dataSync()) };
}

export function addOffset(bias: Float32Array | null, offset: Float32Array | null): Float32Array | null {
  if (!bias) return null;
  const out = Float32Array.from(bias);
  if (offset) for (let i = 0; i < out.length; i++) out[i] += offset[i];
  return out;
}

/** Puts a factorization's weights into its new layers of `model`. */
function setReplacementWeights(model: tf.LayersModel, f: Factorization): void {
  const layers = new Map(listLayers(model).map((l) => [l.name, l.layer]));
  for (const l of f.scheme.layers(f)) {
    const tensors = l.weights.map((w) => tf.tensor(w.values, w.shape));
    layers.get(l.config.name)!.setWeights(tensors);
    tf.dispose(tensors);
  }
}

/** MACs per output value from which the joint fit keeps an original layer's output rather than running the layer again. */
const SUPPLY_MIN_MACS = 1024;

/**
 * Samples of each replaced layer in turn, from frontiers carried through the original network (Φ
 * and the target W*Φ) and, when joint, the compressed one (Φ̃): layer k's samples for a batch run
 * only the calls between layer k − 1's input and layer k's. The layers come in network order (as
 * the plan lists them), so a replacement runs only after it was fitted.
 */
class SampleFrontiers {
  private original: Frontier;
  private compressed: Frontier | null;
  /** The original model's layers by name. */
  private layers: Map<string, tf.layers.Layer>;

  constructor(original: tf.LayersModel, compressed: tf.LayersModel | null, private start: Factorization[], private images: ImageStore, budget: number) {
    this.layers = new Map(listLayers(original).map((l) => [l.name, l.layer]));
    const share = compressed ? budget / 2 : budget;
    this.original = frontierThrough(original, start.map((f) => f.target.name), images, share);
    this.compressed = compressed && frontierThrough(compressed, start.map((f) => f.scheme.layers(f)[0].config.name), images, share);
  }

  /** Layer k's samples; `kernel` is its original kernel. */
  source(k: number, kernel: tf.Tensor4D): SampleSource {
    const { images, original, compressed } = this;
    const target = this.start[k].target;
    const g = target.geometry;
    // The original Conv2D's output is its activation of W*Φ + b, from the target just computed: the
    // next layer's samples then need not run the layer again (for the character CNN's conv3, a
    // third of collecting). Only for layers whose outputs cost many MACs each: keeping a cheap
    // layer's output costs more than running it again (a MobileNet's 1×1 convs: +9 s, +73 MiB).
    const costly = g.kh * g.kw * g.C >= SUPPLY_MIN_MACS;
    const layer = k + 1 < this.start.length && target.className === 'Conv2D' && costly ? this.layers.get(target.name) : undefined;
    return {
      count: images.count,
      async *batches(skip) {
        for (let b = Math.floor(skip / images.batchSize); skip < images.count && b < images.batchCount; b++) {
          const phi = await original.layerInput(k, b);
          const y = linearResponse(phi, kernel, g);
          if (layer) {
            original.supplyOutput(b, layer, () => tf.tidy(() => {
              const z = y.reshape([phi.shape[0], g.outH, g.outW, g.N]);
              const act = (layer as unknown as { activation: { apply(t: tf.Tensor): tf.Tensor } }).activation;
              return act.apply(target.bias ? z.add(tf.tensor1d(target.bias)) : z);
            }));
          }
          let x = phi;
          if (compressed) {
            x = await compressed.layerInput(k, b);
            phi.dispose();
          }
          yield fromImage({ x, y }, b * images.batchSize, skip);
        }
      },
    };
  }

  dispose(): void {
    this.original.dispose();
    this.compressed?.dispose();
  }
}

/** Fits every factorization to the fitting images, in network order. */
export async function fitToData(
  source: ModelSource, start: Factorization[], images: ImageStore, options: ReconstructOptions, reporter: Reporter,
): Promise<DataFit> {
  const original = source.model;
  await images.load(); // the frontiers size their batches by the readable images
  const built = await buildCompressed(source, start);
  const fitOptions = {
    iterations: options.iterations,
    batch: options.batch,
    kappa: options.kappa ?? DEFAULT_FIT.kappa,
    lr: options.lr ?? DEFAULT_FIT.lr,
    stepMacs: layerStepBudget(start.length, AUTO_STEP_MACS),
  };
  const frontiers = new SampleFrontiers(original, options.joint ? built.model : null, start, images, FRONTIER_BUDGET);
  const fitted: Factorization[] = [];
  const layers: LayerFit[] = [];
  const fitStart = performance.now();
  // Adam's shards run on one worker per thread of the wasm backend (shards.ts), no more than a
  // minibatch has shards at their smallest; started when a layer first needs them, so layers with a
  // closed form never pay for them.
  const threads = Math.min(backendThreads() ?? 1, Math.ceil(options.batch / SHARD_IMAGES));
  for (const [index, f] of start.entries()) {
    const layerStart = performance.now();
    const name = f.target.name;
    const kernel = tf.tensor4d(f.target.kernel, [f.target.geometry.kh, f.target.geometry.kw, f.target.geometry.C, f.target.geometry.N]);
    const samples = frontiers.source(index, kernel);
    let fitting: ReturnType<Reporter['phase']> | null = null;
    let solving: ReturnType<Reporter['phase']> | null = null;
    let checking: ReturnType<Reporter['phase']> | null = null;
    const progress = {
      iteration: (done: number, total: number, err: number) => {
        fitting ??= reporter.phase(`${name}: fitting`, total, 'iterations');
        fitting.update(done, `error ${(err * 100).toFixed(2)}%`);
        if (done === total) fitting.finish();
      },
      solve: (done: number, total: number) => {
        solving ??= reporter.phase(`${name}: solving`, total, 'images');
        solving.update(done);
        if (done === total) solving.finish();
      },
      check: (done: number, total: number) => {
        checking ??= reporter.phase(`${name}: checking`, total, 'images');
        checking.update(done);
        if (done === total) checking.finish();
      },
    };
    const form = f.scheme.factored(f.target, f.rank);
    let cache: LayerCache;
    let fit: Awaited<ReturnType<typeof fitLayer>>;
    if (form.closedForm) {
      // One streamed pass: nothing to cache.
      cache = new LayerCache(samples, 0);
      fit = await fitClosedForm(form, f.factors, cache, f.bias !== null, fitOptions, progress);
    } else {
      // Adam samples its minibatches from the cache; without steps, every pass streams.
      const steps = options.iterations !== 0;
      cache = new LayerCache(samples, steps ? options.cacheBytes ?? DEFAULT_CACHE_BYTES : 0);
      if (steps) {
        const collect = reporter.phase(`${name}: collecting`, images.count, 'images');
        await cache.fill((done) => collect.update(done));
        collect.finish(cache.n < images.count ? `${cache.n} cached, the rest streamed` : undefined);
        if (cache.n < images.count) {
          reporter.note(`${name}: the sample cache holds ${cache.n} of ${images.count} images; Adam samples those, the exact solve streams all`);
        }
      }
      const workers = threads > 1 && options.iterations !== 0 ? { pool: shardPool(threads), layer: f } : null;
      fit = await fitLayer(form, f.factors, cache, f.bias !== null, { ...fitOptions, seed: options.seed + 7919 * index }, progress, workers);
    }
    cache.dispose();
    form.dispose();
    kernel.dispose();
    const result: Factorization = { ...f, factors: fit.factors.map(weightValue), bias: addOffset(f.bias, fit.offset) };
    tf.dispose(fit.factors);
    setReplacementWeights(built.model, result);
    fitted.push(result);
    const pct = (x: number) => `${(x * 100).toFixed(2)}%`;
    reporter.note(
      fit.kept === 'data'
        ? `${name}: output error on the fitting images ${pct(fit.fitError.filter)} → ${pct(fit.fitError.data)}`
        : `${name}: data reconstruction did not beat the filter reconstruction on the fitting images (${pct(fit.fitError.filter)}); kept the filter reconstruction`,
    );
    layers.push({ name, kept: fit.kept, fitError: fit.fitError, steps: fit.iterations, seconds: (performance.now() - layerStart) / 1000 });
  }
  frontiers.dispose();
  return { fitted, model: built.model, topology: built.topology, layers, seconds: (performance.now() - fitStart) / 1000 };
}
