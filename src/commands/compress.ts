/**
 * The whole `compress` command without the CLI: load → select layers → choose ranks → factorize →
 * (fit to data, evaluate held out, fine-tune) → build → save once. Every check a user can fail runs before the
 * slow work. Returns a report; src/cli/compress.ts only renders it.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { heldOutWarnings, probeImages } from '../data/images.js';
import { accuracyProblem, chanceWarning } from '../data/labels.js';
import { METADATA_FILE } from '../data/metadata.js';
import type * as tf from '@tensorflow/tfjs';
import { modelMacs } from '../model/cost.js';
import {
  buildCompressed, damageWarnings, factorize, heldOutWarning, layerResults, modelCost, planCompression, planRanks, skippedNotes, withReplacementRecords,
  type CompressOptions, type CompressPlan, type LayerResult, type Progress,
} from '../plan/plan.js';
import { DEFAULT_RUNS, DEFAULT_WARMUP, MIN_RUNS, checkBatchMemory, timeModels, type BatchTiming } from '../timing/bench.js';
import { UserError } from '../errors.js';
import { dataReconstruction, type DataReport } from '../reconstruct/report.js';
import { DEFAULT_PROBES, searchMaxLoss, type MaxLossReport, type MaxLossSearch } from '../plan/maxloss.js';
import {
  DEFAULT_TIMING_BATCH, checkMeasuredTarget, measureTimeTable, planByMeasuredTime, spectrumCandidates, type MeasuredChoice, type TimeTable,
} from '../plan/measured.js';
import { formatRanks } from '../plan/ranks.js';
import { measureSensitivity, planByJointSearch, sensitivityCandidates } from '../plan/sensitivity.js';
import {
  checkOutputDir, dominantEncoding, keptWeights, loadModel, saveModel, type Encoding, type SavedModel,
} from '../model/io.js';
import {
  loadImages, planImages, silentReporter,
  type ImagePlan, type ImageStores, type ReconstructOptions, type Reporter,
} from '../reconstruct/index.js';
import {
  budgetSamples, estimateWork, layerCosts, layerStepBudget, planHeap, searchAffordable,
} from '../reconstruct/budget.js';
import { AUTO_STEP_MACS, autoSteps } from '../reconstruct/fit.js';
import { imageBatchSize } from '../reconstruct/index.js';
import { SEARCH_SCORE_IMAGES } from '../plan/sensitivity.js';
import type { Factorization, Scheme } from '../schemes/index.js';
import { carveValidation, checkFinetune, finetune, loadValidation, type FinetuneOptions, type FinetuneReport } from '../train/finetune.js';
import type { ModelTopology } from '../model/topology.js';

export interface CompressRequest extends CompressOptions {
  input: string;
  out: string;
  /** Replace an existing --out folder written by lowrank. */
  force: boolean;
  /** Data reconstruction, or null for filter reconstruction only. */
  data: ReconstructOptions | null;
  /** Precision of the new weights; default: that of most of the input's weights. */
  quantize?: Encoding;
  /** Fine-tuning by distillation after data reconstruction (needs `data`). */
  finetune?: FinetuneOptions | null;
  /** With `maxLoss`: how many speedup targets the search may try. */
  probes?: number;
  /** With `measured`: the batch the layers and the final bench are timed at. */
  timingBatch?: number;
}

/** With --measured: the time table, the ranks chosen from it (0: left as it is), their prediction and the real bench of the result. */
export interface MeasuredReport extends Pick<MeasuredChoice, 'predictedMs' | 'predictedSpeedup' | 'predictedError'> {
  target: number;
  table: TimeTable;
  ranks: Record<string, number>;
  bench: BatchTiming;
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
  finetune: FinetuneReport | null;
  measured: MeasuredReport | null;
  /** With --speedup but not --measured: a short timing of the original against the result at batch 1 on this backend. */
  quickTiming: BatchTiming | null;
  /** Damage the ranks do: tiny ranks, large filter error. */
  warnings: string[];
  /** With data: said when the held-out agreement with the original is under 90 %. */
  heldOutWarning: string | null;
  maxLoss: MaxLossReport | null;
  saved: SavedModel;
  /** Bytes of weights + model.json, input and output. */
  fileBytes: { before: number; after: number };
  newWeights: Encoding;
}

const shown = (p: string) => path.relative(process.cwd(), p) || p;

export async function runCompress(request: CompressRequest, log: Progress = () => {}, reporter: Reporter = silentReporter): Promise<CompressReport> {
  // Fine-tuning chooses its epoch on fitting images that neither fit trains on.
  const carved = request.data && request.finetune ? carveValidation(planImages(request.data), request.data.seed) : null;
  const images = carved?.plan ?? (request.data ? planImages(request.data) : null);
  const loaded = await loadModel(request.input);
  const outputCheck = checkOutputDir(request.out, request.force, [loaded.jsonPath, path.dirname(loaded.jsonPath), ...loaded.shards.map((s) => s.path)]);
  let plan = planCompression(loaded.model, request, loaded.topology);
  if (request.finetune) checkFinetune(loaded.model);
  if (plan.defaulted) log(plan.defaulted);
  for (const line of skippedNotes(plan.skipped.filter((s) => !s.byChoice))) log(line);
  for (const r of plan.ranked.filter((r) => r.slower)) {
    log(`warning: ${r.info.name} at rank ${r.rank} costs at least as many MACs as the original layer; written because of --allow-slower`);
  }
  let pace: number | null = null;
  if (request.data && images) {
    const started = performance.now();
    const probed = await probeImages(loaded.model, images.fit, request.data.pixels, shown(loaded.jsonPath));
    pace = (probed * modelMacs(plan.layers).total) / Math.max(1e-3, (performance.now() - started) / 1000);
  }
  const accuracyNote = request.data && images ? accuracyProblem(loaded.model, images.classes, request.data.data, request.data.labels) : null;
  if (accuracyNote) log(`warning: ${accuracyNote}`);
  for (const w of images ? heldOutWarnings(images.fit, images.holdout, images.holdoutSource === 'eval-data') : []) log(`warning: ${w}`);
  const timingBatch = request.timingBatch ?? DEFAULT_TIMING_BATCH;
  let table: TimeTable | null = null;
  if (request.measured) {
    checkBatchMemory(loaded.model, [timingBatch]);
    table = await measureTimeTable(loaded.model, loaded.topology, plan, timingBatch, reporter);
    checkMeasuredTarget(table, request.speedup!);
  }
  // The joint rank search, when --speedup chooses ranks from data and it is affordable (budget.ts).
  let search = request.speedup !== undefined && !table && request.maxLoss === undefined && request.data !== null;
  if (request.data && images) {
    search = planDataWork(loaded.model, loaded.topology, plan, images, request.data, search, pace, log);
  }
  const stores = request.data && images ? await loadImages(loaded.model, images, request.data, reporter) : null;
  let searched: MaxLossSearch | null = null;
  let measured: MeasuredChoice | null = null;
  if (request.maxLoss !== undefined) {
    searched = await searchMaxLoss(loaded.model, loaded.topology, plan, stores!, images!, request.data!, request.maxLoss, request.probes ?? DEFAULT_PROBES, !accuracyNote, log, reporter);
    plan = searched.plan;
    const c = searched.report.chosen;
    log(`chose ${c.target}× (${formatRanks(planRanks(plan))}, ${c.theoreticalSpeedup.toFixed(2)}× by MACs): loses ${c.loss.toFixed(2)} points of ${searched.report.measure}, within ${request.maxLoss}`);
  } else if (table) {
    const candidates = stores
      ? sensitivityCandidates(plan, await measureSensitivity(loaded.model, loaded.topology, plan, stores.fit, reporter))
      : spectrumCandidates(plan, loaded.topology);
    measured = planByMeasuredTime(plan, table, candidates, request.speedup!);
    plan = measured.plan;
    log(`ranks for ≥ ${request.speedup}× in measured time at batch ${timingBatch}: ${formatRanks(planRanks(plan))}, predicted ${measured.predictedSpeedup.toFixed(2)}×`);
  } else if (request.speedup !== undefined && stores && search) {
    const search = await planByJointSearch(loaded.model, loaded.topology, plan, stores.fit, request.data!, request.speedup, reporter);
    plan = search.plan;
    log(`ranks for ≥ ${request.speedup}× chosen by joint fits of ${search.evaluated.length} allocations: ${formatRanks(search.chosen.ranks)} (equal fractions: ${formatRanks(search.equal.ranks)})`);
  }

  const filter = searched?.filter ?? factorize(plan, loaded.topology, log);
  const layers = layerResults(plan, filter);
  const warnings = damageWarnings(layers, Boolean(request.data));
  for (const w of warnings) log(`warning: ${w}`);
  let data: DataReport | null = null;
  let faithless: string | null = null;
  let tuned: FinetuneReport | null = null;
  let built: { model: tf.LayersModel; topology: ModelTopology };
  let written = filter;
  if (request.data && stores) {
    if (!searched) log(`data reconstruction (${request.data.joint ? 'joint' : 'non-joint'}) on ${stores.fit.count} fitting images, ${stores.holdout.count} held out${images!.holdoutSource === 'eval-data' ? ` from ${request.data.evalData}` : ''}`);
    const result = searched?.result ?? await dataReconstruction(loaded.model, loaded.topology, filter, stores, images!, request.data, reporter);
    ({ report: data, built, fitted: written } = result);
    if (accuracyNote) data.accuracy = null;
    faithless = heldOutWarning(data.agreement.data, data.images.holdout, data.accuracy);
    const chance = data.accuracy && chanceWarning(loaded.model, data.accuracy.original, data.accuracy.labeled);
    if (chance) log(`warning: ${chance}`);
    if (request.finetune) {
      const factorLayers = written.flatMap((f) => f.scheme.layers(f).map((l) => l.config.name));
      // Labels that are not the model's classes would teach it wrong ones.
      const options = accuracyNote ? { ...request.finetune, labelWeight: 0 } : request.finetune;
      const validation = await loadValidation(carved!.validation, stores, request.data.pixels);
      tuned = await finetune(loaded.model, built.model, factorLayers, stores, validation, options, reporter);
    }
  } else {
    built = await buildCompressed(loaded.model, loaded.topology, filter);
  }
  let measuredReport: MeasuredReport | null = null;
  if (table && measured) {
    log(`timing the original against the result at batch ${timingBatch}`);
    const [bench] = await timeModels(loaded.model, built.model, [timingBatch], DEFAULT_RUNS, DEFAULT_WARMUP, reporter);
    const { predictedMs, predictedSpeedup, predictedError } = measured;
    measuredReport = { target: request.speedup!, table, ranks: Object.fromEntries(measured.ranks), predictedMs, predictedSpeedup, predictedError, bench };
  }
  let quickTiming: BatchTiming | null = null;
  if (request.speedup !== undefined && !request.measured) {
    log(`timing the original against the result at batch 1 (short: ${MIN_RUNS} runs each; lowrank bench times it fully)`);
    [quickTiming] = await timeModels(loaded.model, built.model, [1], MIN_RUNS, 1, reporter);
  }
  const encoding = request.quantize ?? dominantEncoding(loaded);
  const saved = await saveModel(built.model, request.out, {
    topology: built.topology,
    check: outputCheck,
    userDefinedMetadata: withReplacementRecords(loaded.userDefinedMetadata, written),
    weights: keptWeights(built.model, loaded, written.flatMap((f) => f.scheme.layers(f).map((l) => l.config.name)), encoding),
    log,
    companions: [METADATA_FILE].map((name) => path.join(path.dirname(loaded.jsonPath), name)).filter((p) => fs.existsSync(p)),
  });
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
    finetune: tuned,
    measured: measuredReport,
    quickTiming,
    warnings,
    heldOutWarning: faithless,
    maxLoss: searched?.report ?? null,
    saved,
    fileBytes: { before: loaded.weightBytes + loaded.jsonBytes, after: saved.weightBytes + saved.jsonBytes },
    newWeights: encoding,
  };
}

/** Fitting images set aside to score the joint rank search's fits on (as sensitivity.ts takes them). */
const scoreImages = (fit: number) => Math.max(1, Math.min(SEARCH_SCORE_IMAGES, Math.floor(fit / 5)));

/** Multiply-accumulates a second the fits reach relative to the model's own forward pass (small ops, copies, exact solves). */
const FIT_PACE = 0.35;

const minutes = (s: number) => (s < 90 ? `${Math.max(1, Math.round(s))} s` : `${(s / 60).toFixed(1)} min`);

/**
 * Before the slow work of --data: the default sample count cut to the model's cost, the heap plan
 * (refused when it cannot fit), the joint rank search kept only when affordable (said when not),
 * and the time it should all take at `pace` (MACs a second of the probe's forward pass). Returns
 * whether the search runs.
 */
function planDataWork(
  model: tf.LayersModel, topology: ModelTopology, plan: CompressPlan, images: ImagePlan, data: ReconstructOptions, search: boolean, pace: number | null, log: Progress,
): boolean {
  if (data.samples === 'auto') {
    const budget = budgetSamples(model);
    if (images.fit.length > budget) {
      log(`--samples auto: fitting on ${budget} of the ${images.fit.length} images (${(modelMacs(plan.layers).total / 1e9).toFixed(2)} GMACs an image)`);
      images.fit = images.fit.slice(0, budget);
    }
  }
  const costs = layerCosts(plan.ranked, topology);
  const n = images.fit.length;
  const stepBudget = layerStepBudget(costs.length, AUTO_STEP_MACS);
  const batch = Math.min(data.batch, n);
  const steps = (l: (typeof costs)[number]) => {
    if (l.closedForm) return 0;
    return data.iterations === 'auto' ? autoSteps({ macsPerImage: l.factoredMacs, priorMacs: l.priorMacs }, batch, stepBudget) : data.iterations;
  };
  const count = { fit: n, holdout: images.holdout.length, score: scoreImages(n) };
  let work = estimateWork(model, costs, count, steps, batch, search);
  const why = search ? searchAffordable(costs, work.search) : null;
  if (why) {
    log(`rank search by joint fits skipped (${why}); ranks from the layers' filter spectra`);
    search = false;
    work = { ...work, search: 0 };
  }
  planHeap(model, costs, { batch, heldImages: search ? count.score : 0, forwardBatch: imageBatchSize(model), networks: 3, adam: (l) => steps(l) > 0 });
  if (pace) {
    const seconds = (macs: number) => macs / (pace * FIT_PACE);
    const parts = [...(search ? [`rank search ~${minutes(seconds(work.search))}`] : []), `fit ~${minutes(seconds(work.fit))}`, `held-out check ~${minutes(work.evaluate / pace)}`];
    log(`estimated time: ${minutes(seconds(work.search + work.fit) + work.evaluate / pace)} (${parts.join(', ')}; ${(pace / 1e9).toFixed(1)} GMAC/s measured on the model's forward pass)`);
  }
  return search;
}
