/**
 * Stage 4 of compress (src/commands/compress.ts), also run by sweep and --max-loss: fit the filter
 * factorizations to the fitting images, then evaluate the original, the filter-only and the
 * data-fitted models side by side on the held-out images, as a report.
 */
import { evaluateHeldOut, type HeldOutReport } from './heldout.js';
import { fitToData, type DataFit, type LayerFit } from './index.js';
import type { Factorization } from '../schemes/index.js';
import type { ModelSource } from '../model/topology.js';
import { buildCompressed } from '../model/rewrite.js';
import type { DataContext } from '../data/plan.js';

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
  source: ModelSource, filter: Factorization[], data: DataContext,
): Promise<DataResult> {
  const fit = await fitToData(source, filter, data.stores.fit, data.options, data.reporter);
  return reportDataFit(source, filter, fit, data);
}

/** A data-fitted model, its factorizations and the report of its fit and held-out evaluation. */
export interface DataResult {
  report: DataReport;
  built: ModelSource;
  fitted: Factorization[];
}

/** The held-out evaluation of a finished fit beside the filter factorizations it started from, as a report. */
export async function reportDataFit(
  source: ModelSource, filter: Factorization[], fit: DataFit, { stores, images, options, reporter }: DataContext,
): Promise<DataResult> {
  const filterModel = await buildCompressed(source, filter);
  const heldOut = await evaluateHeldOut(source.model, { model: filterModel.model, factorizations: filter }, { model: fit.model, factorizations: fit.fitted }, stores.holdout, reporter);
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

