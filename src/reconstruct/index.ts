/**
 * Data reconstruction (Jaderberg et al. 2014, eq. 4) of the layers `compressModel` replaced: for
 * each replaced layer in network order, fit its factors to reproduce the original layer's linear
 * response on sample images, starting from the filter reconstruction (fit.ts).
 *
 * - Non-joint: the factors see the layer's input in the original network (Φ̃ = Φ).
 * - Joint: they see its input in the compressed network whose earlier replaced layers already carry
 *   their data-reconstructed factors; the target stays the original network's response, so each
 *   layer also corrects the error of the ones before it.
 *
 * Held-out images (--eval-data, or a seeded fraction of --data set aside before fitting) measure
 * per layer ‖Y − Ŷ‖/‖Y‖, Y the original network's linear response and Ŷ the replacement's inside the
 * compressed network (all approximated layers before it in place), after filter and after data
 * reconstruction, and the model's top-1 accuracy when the images are labeled.
 */
import * as tf from '@tensorflow/tfjs';
import { performance } from 'node:perf_hooks';
import type { CompressResult } from '../compress.js';
import { UserError } from '../errors.js';
import {
  inputSizeOf, listImages, shuffled, splitHoldout, type BatchStats, type ImageEntry, type PixelOptions,
} from '../data/images.js';
import { listLayers } from '../model/layers.js';
import type { WeightValue } from '../schemes.js';
import { DEFAULT_CACHE_BYTES, ImageStore, LayerCache, type SampleFn } from './data.js';
import { factoredLayer, type FactoredLayer } from './factors.js';
import { DEFAULT_FIT, fitLayer } from './fit.js';
import { pad2d, paddingOf } from './ops.js';
import { silentReporter, type Reporter } from './progress.js';
import { makeTap } from './taps.js';

export { silentReporter, stderrReporter, type Reporter } from './progress.js';

export interface ReconstructOptions {
  /** Folder of sample images (one subfolder per class for accuracy). */
  data: string;
  /** Held-out folder; default: a `holdout` fraction of `data`. */
  evalData?: string;
  holdout: number;
  /** At most this many fitting images. */
  samples: number;
  joint: boolean;
  /** Adam steps per layer, or 'auto' (see fit.ts). */
  iterations: number | 'auto';
  batch: number;
  seed: number;
  pixels: PixelOptions;
  labels?: string;
  /** Byte budget of the per-layer sample cache. */
  cacheBytes?: number;
  /** Filter-prior weight and Adam step (see fit.ts). */
  kappa?: number;
  lr?: number;
}

export const DEFAULT_RECONSTRUCT = {
  holdout: 0.2,
  samples: 1000,
  joint: true,
  iterations: DEFAULT_FIT.iterations as number | 'auto',
  batch: DEFAULT_FIT.batch,
  seed: 1,
};

export interface ImagePlan {
  fit: ImageEntry[];
  holdout: ImageEntry[];
  /** 'eval-data' when the held-out images come from their own folder. */
  holdoutSource: 'holdout' | 'eval-data';
  classes: string[];
}

/** Lists and splits the images (no decoding): run before the slow work so bad input fails fast. */
export function planImages(options: ReconstructOptions): ImagePlan {
  const data = listImages(options.data, options.labels);
  if (data.entries.length < 2) {
    throw new UserError(`--data ${options.data}: only ${data.entries.length} image; data reconstruction needs at least 2`);
  }
  let fit: ImageEntry[];
  let holdout: ImageEntry[];
  let classes = data.classes;
  if (options.evalData) {
    const evalSet = listImages(options.evalData, options.labels);
    fit = shuffled(data.entries, options.seed);
    holdout = evalSet.entries;
    if (!options.labels && evalSet.classes.join('\n') !== data.classes.join('\n') && evalSet.classes.length && data.classes.length) {
      throw new UserError(`--eval-data ${options.evalData}: its class folders (${evalSet.classes.join(', ')}) differ from --data's (${data.classes.join(', ')}); pass --labels to fix the order`);
    }
    classes = data.classes.length ? data.classes : evalSet.classes;
  } else {
    ({ fit, holdout } = splitHoldout(data.entries, options.holdout, options.seed));
  }
  if (fit.length > options.samples) fit = fit.slice(0, options.samples);
  return { fit, holdout, holdoutSource: options.evalData ? 'eval-data' : 'holdout', classes };
}

export interface LayerReconstruction {
  name: string;
  /** 'filter' when data reconstruction did not beat the filter reconstruction on the fitting images. */
  kept: 'data' | 'filter';
  /** Relative output error on the fitting images (through the network being fitted). */
  fitError: { filter: number; data: number };
  /** Relative output error on the held-out images, in the compressed network. */
  dataError: { filter: number; data: number };
  /** Fitting images held in the cache for the iterative phase. */
  cachedImages: number;
  iterations: number;
  seconds: number;
}

export interface ReconstructReport {
  joint: boolean;
  images: { fit: number; holdout: number; skipped: number; holdoutSource: 'holdout' | 'eval-data' };
  iterations: number | 'auto';
  batch: number;
  seed: number;
  layers: LayerReconstruction[];
  /** Top-1 accuracy on the held-out images, when they are labeled. */
  accuracy: { original: number; filter: number; data: number; labeled: number } | null;
  /** Wall time of fitting (all layers) and of the held-out evaluation. */
  seconds: { fit: number; evaluate: number };
  skippedFiles: string[];
}

interface Target {
  name: string;
  fl: FactoredLayer;
  kernel: tf.Tensor4D;
  bias: Float32Array | null;
  /** Names of the replacement layers in the compressed model. */
  newLayers: string[];
  filterWeights: WeightValue[][];
  dataWeights: WeightValue[][] | null;
  /** Factors and offset of the filter and data reconstructions, for evaluation. */
  filterFactors: tf.Tensor[];
  dataFactors: tf.Tensor[] | null;
  offset: Float32Array | null;
}

/** The original layer's linear response (no bias, no activation), as rows × N. */
function linearResponse(t: Target, x: tf.Tensor4D): tf.Tensor2D {
  const g = t.fl.g;
  return tf.tidy(() => {
    const [h, w] = paddingOf(g);
    return tf.conv2d(pad2d(x, h, w), t.kernel, [g.sh, g.sw], 'valid', 'NHWC', [g.dh, g.dw]).reshape([-1, g.N]);
  });
}

function setWeights(model: tf.LayersModel, names: string[], weights: WeightValue[][]): void {
  const layers = new Map(listLayers(model).map((l) => [l.name, l.layer]));
  names.forEach((name, i) => {
    const tensors = weights[i].map((w) => tf.tensor(w.values, w.shape));
    layers.get(name)!.setWeights(tensors);
    tf.dispose(tensors);
  });
}

function addBias(bias: Float32Array | null, offset: Float32Array | null): Float32Array | null {
  if (!bias) return null;
  const out = Float32Array.from(bias);
  if (offset) for (let i = 0; i < out.length; i++) out[i] += offset[i];
  return out;
}

/**
 * Fits every replaced layer of `result` to data; leaves `result.model` with the fitted weights
 * (or the filter reconstruction where that was better) and reports held-out errors and accuracy.
 */
export async function reconstructData(
  original: tf.LayersModel, result: CompressResult, plan: ImagePlan, options: ReconstructOptions, reporter: Reporter = silentReporter,
): Promise<ReconstructReport> {
  const size = inputSizeOf(original.inputs[0].shape, 'model');
  const compressed = result.model;
  const stats: BatchStats = { skipped: [], decoded: 0 };
  const fitStore = new ImageStore(plan.fit, size, options.pixels, 64, stats);
  await fitStore.load();
  if (fitStore.count < 2) {
    throw new UserError(`--data ${options.data}: ${fitStore.count} readable fitting image${fitStore.count === 1 ? '' : 's'} (of ${plan.fit.length}); data reconstruction needs at least 2`);
  }
  const holdStore = new ImageStore(plan.holdout, size, options.pixels, 64, stats);
  await holdStore.load();
  if (holdStore.count < 1) {
    throw new UserError(`${plan.holdoutSource === 'eval-data' ? `--eval-data ${options.evalData}` : `--data ${options.data}`}: no readable held-out image; give PNG or JPEG files`);
  }

  const targets: Target[] = result.targets.map((t) => {
    const fl = factoredLayer(t.conv, t.replacement);
    const g = t.conv.geometry;
    return {
      name: t.info.name,
      fl,
      kernel: tf.tensor4d(t.conv.kernel, [g.kh, g.kw, g.C, g.N]),
      bias: t.conv.bias,
      newLayers: t.replacement.layers.map((l) => l.config.name),
      filterWeights: t.replacement.layers.map((l) => l.weights),
      dataWeights: null,
      filterFactors: fl.initial(),
      dataFactors: null,
      offset: null,
    };
  });

  const fitOptions = {
    iterations: options.iterations,
    batch: options.batch,
    kappa: options.kappa ?? DEFAULT_FIT.kappa,
    lr: options.lr ?? DEFAULT_FIT.lr,
  };
  const layers: LayerReconstruction[] = [];
  const fitStart = performance.now();
  for (const [index, t] of targets.entries()) {
    const layerStart = performance.now();
    const originalTap = makeTap(original, [t.name], false);
    const fittedTap = options.joint ? makeTap(compressed, [t.newLayers[0]], false) : null;
    const sample: SampleFn = (images) => tf.tidy(() => {
      const phi = originalTap(images).inputs[0];
      const y = linearResponse(t, phi);
      const x = fittedTap ? fittedTap(images).inputs[0] : phi;
      return { x, y };
    });
    const cache = new LayerCache(fitStore, sample, options.cacheBytes ?? DEFAULT_CACHE_BYTES);
    const collect = reporter.phase(`${t.name}: collecting`, fitStore.count, 'images');
    await cache.fill((done) => collect.update(done));
    collect.finish(cache.n < fitStore.count ? `${cache.n} cached, the rest streamed` : undefined);
    if (cache.n < fitStore.count) {
      reporter.note(`${t.name}: the sample cache holds ${cache.n} of ${fitStore.count} images; Adam samples those, the exact solve streams all`);
    }
    let fitting: ReturnType<Reporter['phase']> | null = null;
    let solving: ReturnType<Reporter['phase']> | null = null;
    const fit = await fitLayer(t.fl, cache, t.bias !== null, { ...fitOptions, seed: options.seed + 7919 * index }, {
      iteration: (done, total, err) => {
        fitting ??= reporter.phase(`${t.name}: fitting`, total, 'iterations');
        fitting.update(done, `error ${(err * 100).toFixed(2)}%`);
        if (done === total) fitting.finish();
      },
      solve: (done, total) => {
        solving ??= reporter.phase(`${t.name}: solving`, total, 'images');
        solving.update(done);
        if (done === total) solving.finish();
      },
    });
    cache.dispose();
    t.dataFactors = fit.factors;
    t.offset = fit.offset;
    t.dataWeights = t.fl.weights(fit.factors, addBias(t.bias, fit.offset));
    setWeights(compressed, t.newLayers, t.dataWeights);
    const pct = (x: number) => `${(x * 100).toFixed(2)}%`;
    reporter.note(
      fit.kept === 'data'
        ? `${t.name}: output error on the fitting images ${pct(fit.fitError.filter)} → ${pct(fit.fitError.data)}`
        : `${t.name}: data reconstruction did not beat the filter reconstruction on the fitting images (${pct(fit.fitError.filter)}); kept the filter reconstruction`,
    );
    layers.push({
      name: t.name,
      kept: fit.kept,
      fitError: fit.fitError,
      dataError: { filter: NaN, data: NaN },
      cachedImages: cache.n,
      iterations: fit.iterations,
      seconds: (performance.now() - layerStart) / 1000,
    });
  }
  const fitSeconds = (performance.now() - fitStart) / 1000;

  // Held-out evaluation: the original network once per batch, the compressed one with each set of
  // weights.
  const evalStart = performance.now();
  const names = targets.map((t) => t.name);
  const originalTap = makeTap(original, names, true);
  const compressedTap = makeTap(compressed, targets.map((t) => t.newLayers[0]), true);
  const sums = { filter: targets.map(() => 0), data: targets.map(() => 0), yy: targets.map(() => 0) };
  const correct = { original: 0, filter: 0, data: 0 };
  let labeled = 0;
  const variants = ['filter', 'data'] as const;
  const evaluate = reporter.phase('evaluating held-out images', holdStore.count, 'images');
  let evaluated = 0;
  for await (const b of holdStore.batches()) {
    const orig = originalTap(b.x);
    const ys = targets.map((t, l) => linearResponse(t, orig.inputs[l]));
    targets.forEach((t, l) => { sums.yy[l] += tf.tidy(() => ys[l].square().sum().dataSync()[0]); });
    const predictions: Record<string, Int32Array> = {};
    predictions.original = tf.tidy(() => orig.output!.reshape([b.x.shape[0], -1]).argMax(1).dataSync() as Int32Array);
    for (const variant of variants) {
      targets.forEach((t) => setWeights(compressed, t.newLayers, variant === 'filter' ? t.filterWeights : t.dataWeights!));
      const comp = compressedTap(b.x);
      targets.forEach((t, l) => {
        const factors = variant === 'filter' ? t.filterFactors : t.dataFactors!;
        const offset = variant === 'data' && t.offset ? t.offset : null;
        sums[variant][l] += tf.tidy(() => {
          let e = t.fl.forward(comp.inputs[l], factors).sub(ys[l]);
          if (offset) e = e.add(tf.tensor1d(offset));
          return e.square().sum().dataSync()[0];
        });
      });
      predictions[variant] = tf.tidy(() => comp.output!.reshape([b.x.shape[0], -1]).argMax(1).dataSync() as Int32Array);
      tf.dispose([...comp.inputs, comp.output!]);
    }
    b.labels.forEach((label, i) => {
      if (label === null) return;
      labeled++;
      for (const k of ['original', 'filter', 'data'] as const) if (predictions[k][i] === label) correct[k]++;
    });
    tf.dispose([b.x, ...orig.inputs, orig.output!, ...ys]);
    evaluated += b.labels.length;
    evaluate.update(evaluated);
    await new Promise((resolve) => setImmediate(resolve));
  }
  evaluate.finish();
  targets.forEach((t) => setWeights(compressed, t.newLayers, t.dataWeights!));
  layers.forEach((l, i) => {
    const yy = Math.max(sums.yy[i], 1e-30);
    l.dataError = { filter: Math.sqrt(sums.filter[i] / yy), data: Math.sqrt(sums.data[i] / yy) };
  });
  for (const t of targets) {
    t.fl.dispose();
    const keep = new Set(t.dataFactors ?? []);
    tf.dispose([t.kernel, ...t.filterFactors.filter((f) => !keep.has(f)), ...(t.dataFactors ?? [])]);
  }
  return {
    joint: options.joint,
    images: { fit: fitStore.count, holdout: holdStore.count, skipped: stats.skipped.length, holdoutSource: plan.holdoutSource },
    iterations: options.iterations,
    batch: options.batch,
    seed: options.seed,
    layers,
    accuracy: labeled > 0 ? { original: correct.original / labeled, filter: correct.filter / labeled, data: correct.data / labeled, labeled } : null,
    seconds: { fit: fitSeconds, evaluate: (performance.now() - evalStart) / 1000 },
    skippedFiles: stats.skipped,
  };
}
