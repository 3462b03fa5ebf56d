/**
 * The whole `compress` command without the CLI: load → select layers → choose ranks → factorize →
 * (fit to data, evaluate held out) → build → save once. Every check a user can fail runs before the
 * slow work. Returns a report; src/cli/compress.ts only renders it.
 */
import * as path from 'node:path';
import type * as tf from '@tensorflow/tfjs';
import {
  buildCompressed, factorize, layerResults, modelCost, planCompression, replacementRecords,
  type CompressOptions, type CompressPlan, type LayerResult, type Progress,
} from './compress.js';
import { planBySensitivity } from './sensitivity.js';
import { checkOutputDir, loadModel, saveModel, type SavedModel } from './model/io.js';
import { evaluateHeldOut, type HeldOutReport } from './reconstruct/heldout.js';
import {
  fitToData, loadImages, planImages, silentReporter,
  type ImagePlan, type ImageStores, type LayerFit, type ReconstructOptions, type Reporter,
} from './reconstruct/index.js';
import type { Factorization, Scheme } from './schemes/index.js';

export interface CompressRequest extends CompressOptions {
  input: string;
  out: string;
  /** Replace an existing --out folder written by lowrank. */
  force: boolean;
  /** Data reconstruction, or null for filter reconstruction only. */
  data: ReconstructOptions | null;
}

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

export interface CompressReport {
  /** model.json paths, relative to the working folder. */
  input: string;
  output: string;
  scheme: Scheme;
  layers: LayerResult[];
  skipped: CompressPlan['skipped'];
  totalMacsBefore: number;
  totalMacsAfter: number;
  theoreticalSpeedup: number;
  /** With --speedup: the target and the summed predicted filter error of the chosen and of equal-fraction ranks. */
  allocation: { target: number; predictedError: number; baselineError: number | null; basis: 'spectrum' | 'measured' } | null;
  data: DataReport | null;
  saved: SavedModel;
}

const shown = (p: string) => path.relative(process.cwd(), p) || p;

/**
 * Stage 4: fits the filter factorizations to the fitting images, then evaluates the original, the
 * filter-only and the data-fitted models side by side on the held-out images.
 */
export async function dataReconstruction(
  original: tf.LayersModel, topology: any, filter: Factorization[], stores: ImageStores, images: ImagePlan, options: ReconstructOptions, reporter: Reporter,
): Promise<{ report: DataReport; built: { model: tf.LayersModel; topology: any }; fitted: Factorization[] }> {
  const fit = await fitToData(original, topology, filter, stores.fit, options, reporter);
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

/** A compressed model's userDefinedMetadata: the input's, plus what replaced what. */
export function outputMetadata(input: { userDefinedMetadata?: {} }, written: Factorization[]): {} {
  return { ...(input.userDefinedMetadata ?? {}), lowrank: { replaced: replacementRecords(written) } };
}

export async function runCompress(request: CompressRequest, log: Progress = () => {}, reporter: Reporter = silentReporter): Promise<CompressReport> {
  const images = request.data ? planImages(request.data) : null;
  const loaded = await loadModel(request.input);
  checkOutputDir(request.out, request.force, loaded.jsonPath);
  let plan = planCompression(loaded.model, request, loaded.topology);
  if (plan.defaulted) log(plan.defaulted);
  for (const s of plan.skipped) log(`warning: left ${s.name} as it is: ${s.reason}`);
  for (const r of plan.ranked.filter((r) => r.slower)) {
    log(`warning: ${r.info.name} at rank ${r.rank} costs at least as many MACs as the original layer; written because of --allow-slower`);
  }
  const stores = request.data && images ? await loadImages(loaded.model, images, request.data) : null;
  if (request.speedup !== undefined && stores) {
    plan = (await planBySensitivity(loaded.model, loaded.topology, plan, stores.fit, request.speedup, reporter)).plan;
    log(`ranks for ≥ ${request.speedup}× chosen by measured sensitivity: ${plan.ranked.map((r) => `${r.info.name}=${r.rank}`).join(', ')}`);
  }

  const filter = factorize(plan, loaded.topology, log);
  const layers = layerResults(plan, filter);
  let data: DataReport | null = null;
  let built: { model: tf.LayersModel; topology: any };
  let written = filter;
  if (request.data && stores) {
    log(`data reconstruction (${request.data.joint ? 'joint' : 'non-joint'}) on ${stores.fit.count} fitting images, ${stores.holdout.count} held out${images!.holdoutSource === 'eval-data' ? ` from ${request.data.evalData}` : ''}`);
    const result = await dataReconstruction(loaded.model, loaded.topology, filter, stores, images!, request.data, reporter);
    ({ report: data, built, fitted: written } = result);
  } else {
    built = await buildCompressed(loaded.model, loaded.topology, filter);
  }
  const saved = await saveModel(built.model, request.out, { force: request.force, topology: built.topology, userDefinedMetadata: outputMetadata(loaded, written) });
  built.model.dispose();
  loaded.model.dispose();
  return {
    input: shown(loaded.jsonPath),
    output: shown(saved.jsonPath),
    scheme: plan.scheme,
    layers,
    skipped: plan.skipped,
    ...modelCost(plan, layers),
    allocation: plan.allocation && {
      target: plan.allocation.target, predictedError: plan.allocation.predictedError, baselineError: plan.allocation.baselineError, basis: plan.allocation.basis,
    },
    data,
    saved,
  };
}
