/**
 * The images of a run with --data: listed and split into fitting and held-out images before any slow
 * work (`planImages`), then decoded once into stores (`loadImages`, store.ts) that every data stage
 * shares through a `DataContext`.
 */
import type * as tf from '@tensorflow/tfjs';
import { UserError } from '../errors.js';
import { listLayers } from '../model/layers.js';
import { MAX_SAMPLES } from '../reconstruct/budget.js';
import type { ReconstructOptions } from '../reconstruct/index.js';
import { silentReporter, type Reporter } from '../report/progress.js';
import { inputSizeOf, listImages, shuffled, splitHoldout, type BatchStats, type ImageEntry } from './images.js';
import { ImageStore } from './store.js';

export interface ImagePlan {
  /** The images the layer-wise fit uses: the first --samples of `pool`. */
  fit: ImageEntry[];
  /** Every fitting candidate, shuffled (fine-tuning trains on all of them). */
  pool: ImageEntry[];
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
  const pool = fit;
  const samples = options.samples === 'auto' ? MAX_SAMPLES : options.samples;
  if (fit.length > samples) fit = fit.slice(0, samples);
  return { fit, pool, holdout, holdoutSource: options.evalData ? 'eval-data' : 'holdout', classes };
}

/** The decoded fitting and held-out images (decoded once, kept while small). */
export interface ImageStores {
  fit: ImageStore;
  holdout: ImageStore;
  stats: BatchStats;
}

/** What the data stages share: the loaded images, where they came from, the --data options, and progress. */
export interface DataContext {
  stores: ImageStores;
  images: ImagePlan;
  options: ReconstructOptions;
  reporter: Reporter;
}

/** Images per batch: 64, or fewer so that one activation of a batch stays within BATCH_ACTIVATION_BYTES. */
const MAX_BATCH = 64;
const BATCH_ACTIVATION_BYTES = 64 * 1024 * 1024;

/** The batch for `model` (a 224×224 MobileNet-v2's largest activation, 112×112×96, takes 4.8 MB per image: 13). */
export function imageBatchSize(model: tf.LayersModel): number {
  const sizes = listLayers(model).flatMap((l) => l.calls.flatMap((c) => [...c.inputShapes, ...c.outputShapes]));
  const largest = Math.max(...sizes.map((s) => s.slice(1).reduce((a: number, b) => a * (b ?? 1), 4)));
  return Math.max(1, Math.min(MAX_BATCH, Math.floor(BATCH_ACTIVATION_BYTES / largest)));
}

export async function loadImages(model: tf.LayersModel, plan: ImagePlan, options: ReconstructOptions, reporter: Reporter = silentReporter): Promise<ImageStores> {
  const size = inputSizeOf(model.inputs[0].shape, 'model');
  const stats: BatchStats = { skipped: [], decoded: 0 };
  const batch = imageBatchSize(model);
  const decoding = reporter.phase('decoding images', plan.fit.length + plan.holdout.length, 'images');
  const fit = new ImageStore(plan.fit, size, options.pixels, batch, stats);
  await fit.load((done) => decoding.update(done));
  if (fit.count < 2) {
    throw new UserError(`--data ${options.data}: ${fit.count} readable fitting image${fit.count === 1 ? '' : 's'} (of ${plan.fit.length}); data reconstruction needs at least 2`);
  }
  const holdout = new ImageStore(plan.holdout, size, options.pixels, batch, stats);
  await holdout.load((done) => decoding.update(plan.fit.length + done));
  decoding.finish();
  if (holdout.count < 1) {
    throw new UserError(`${plan.holdoutSource === 'eval-data' ? `--eval-data ${options.evalData}` : `--data ${options.data}`}: no readable held-out image; give PNG or JPEG files`);
  }
  return { fit, holdout, stats };
}
