/**
 * Stage 4 of compress (pipeline.ts), also run by sweep and --max-loss: fit the filter
 * factorizations to the fitting images, then evaluate the original, the filter-only and the
 * data-fitted models side by side on the held-out images, as a report.
 */
import type * as tf from '@tensorflow/tfjs';
import { buildCompressed } from '../plan/plan.js';
import { evaluateHeldOut, type HeldOutReport } from './heldout.js';
import {
  fitToData, type DataFit, type ImagePlan, type ImageStores, type LayerFit, type ReconstructOptions, type Reporter,
} from './index.js';
import type { Factorization } from '../schemes/index.js';
import type { ModelTopology } from '../model/topology.js';

export interface DataReport {
  joint: boolean;
  images: { fit: number; holdout: number; skipped: number; holdoutSource: 'holdout' | 'eval-data' };
  iterations: number | 'auto';
  batch: number;
  seed: number;
  layers: (LayerFit & { dataError: { filter: number; data: number } })[];
  accuracy: HeldOutReport['accuracy'];
  agreement: HeldOutReport['agreement'];
  seconds: { fit: number; evaluate: number };
  skippedFiles: string[];
}

/** Fits `filter` to the fitting images and reports it beside the filter-only model on the held-out images. */
export async function dataReconstruction(
  original: tf.LayersModel, topology: ModelTopology, filter: Factorization[], stores: ImageStores, images: ImagePlan, options: ReconstructOptions, reporter: Reporter,
): Promise<DataResult> {
  const fit = await fitToData(original, topology, filter, stores.fit, options, reporter);
  return reportDataFit(original, topology, filter, fit, stores, images, options, reporter);
}

/** A data-fitted model, its factorizations and the report of its fit and held-out evaluation. */
export interface DataResult {
  report: DataReport;
  built: { model: tf.LayersModel; topology: ModelTopology };
  fitted: Factorization[];
}

/** The held-out evaluation of a finished fit beside the filter factorizations it started from, as a report. */
export async function reportDataFit(
  original: tf.LayersModel, topology: ModelTopology, filter: Factorization[], fit: DataFit, stores: ImageStores, images: ImagePlan, options: ReconstructOptions, reporter: Reporter,
): Promise<DataResult> {
  const filterModel = await buildCompressed(original, topology, filter);
  const heldOut = await evaluateHeldOut(original, { model: filterModel.model, factorizations: filter }, { model: fit.model, factorizations: fit.fitted }, stores.holdout, reporter);
  filterModel.model.dispose();
  return {
    built: { model: fit.model, topology: fit.topology },
    fitted: fit.fitted,
    report: {
      joint: options.joint,
      images: { fit: stores.fit.count, holdout: stores.holdout.count, skipped: stores.stats.skipped.length, holdoutSource: images.holdoutSource },
      iterations: options.iterations,
      batch: options.batch,
      seed: options.seed,
      layers: fit.layers.map((l, i) => ({ ...l, dataError: heldOut.layerErrors[i] })),
      accuracy: heldOut.accuracy,
      agreement: heldOut.agreement,
      seconds: { fit: fit.seconds, evaluate: heldOut.seconds },
      skippedFiles: stores.stats.skipped,
    },
  };
}

