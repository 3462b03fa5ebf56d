/**
 * The whole `compress` command without the CLI: load → select layers → choose ranks → factorize →
 * (fit to data, evaluate held out, fine-tune) → build → save once. Every check a user can fail runs before the
 * slow work. Returns a report; src/cli/compress.ts only renders it. `compressModel` is the same
 * without data or files, for a model in memory (filter reconstruction only).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import * as tf from '@tensorflow/tfjs';
import { heldOutWarnings, probeImages } from '../data/images.js';
import { accuracyProblem, chanceWarning } from '../data/labels.js';
import { METADATA_FILE } from '../data/metadata.js';
import { modelMacs } from '../model/cost.js';
import { checkOutputDir, dominantEncoding, keptWeights, loadModel, modelTopology, saveModel, type Encoding, type LoadedModel, type OutputCheck, type SavedModel } from '../model/io.js';
import { withReplacementRecords } from '../model/records.js';
import { buildCompressed } from '../model/rewrite.js';
import type { ModelSource, ModelTopology } from '../model/topology.js';
import { chooseRanks, planCompression, type RankDecision } from '../plan/choose.js';
import { searchScoreImages } from '../plan/joint-search.js';
import { DEFAULT_PROBES, type MaxLossReport, type MaxLossSearch } from '../plan/maxloss.js';
import { DEFAULT_TIMING_BATCH, checkMeasuredTarget, measureTimeTable, type MeasuredChoice, type TimeTable } from '../plan/measured.js';
import { factorize, type AllocationBasis, type CompressOptions, type CompressPlan } from '../plan/plan.js';
import { RESPONSE_IMAGES, responseSpectraApply } from '../plan/responses.js';
import { skippedNotes } from '../plan/select.js';
import {
  budgetSamples, estimateWork, forwardPace, layerCosts, layerStepBudget, planFinetuneHeap, planHeap, SEARCH_FITS, searchMode, searchUnaffordable, type SearchMode,
} from '../reconstruct/budget.js';
import { AUTO_STEP_MACS, autoSteps } from '../reconstruct/fit.js';
import { silentReporter, type ReconstructOptions } from '../reconstruct/index.js';
import { dataReconstruction, type DataReport } from '../reconstruct/report.js';
import { USUALLY_QUICK, type Log, type Reporter } from '../report/progress.js';
import { damageWarnings, heldOutWarning, layerResults, modelCost, type LayerResult } from '../report/results.js';
import type { Factorization, Scheme } from '../schemes/index.js';
import { carveValidation, checkFinetune, finetune, loadFinetuneImages, measureStep, type FinetuneOptions, type FinetuneReport } from '../train/finetune.js';
import { DEFAULT_RUNS, DEFAULT_WARMUP, MIN_RUNS, checkBatchMemory, timeModels, type BatchTiming } from '../timing/loop.js';
import { imageBatchSize, loadImages, planImages, type DataContext, type ImagePlan } from '../data/plan.js';

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
  allocation: { target: number; predictedError: number; baselineError: number | null; basis: AllocationBasis } | null;
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

/** What compress has loaded and checked before any slow work. */
interface Prepared {
  loaded: LoadedModel;
  outputCheck: OutputCheck;
  plan: CompressPlan;
  /** With --data: the fitting and held-out images, and (with --finetune) the validation images set aside. */
  images: ImagePlan | null;
  carved: ReturnType<typeof carveValidation> | null;
  /** Said when the labels do not fit the model's outputs (held-out accuracy is then not reported). */
  accuracyNote: string | null;
  /** MACs a second of the model's forward pass on a few fitting images (to estimate the fit's time). */
  pace: number | null;
}

export async function runCompress(request: CompressRequest, log: Log = () => {}, reporter: Reporter = silentReporter): Promise<CompressReport> {
  const prepared = await prepare(request, log, reporter);
  const { loaded, images, accuracyNote } = prepared;
  const table = await measureIfAsked(request, prepared, reporter);
  // The joint rank search, when --speedup chooses ranks from data and it is affordable (budget.ts).
  const searchAsked = request.speedup !== undefined && !table && request.maxLoss === undefined && request.data !== null;
  let jointSearch: SearchMode | null = null;
  if (request.data && images) {
    jointSearch = planDataWork(loaded, prepared.plan, images, request.data, searchAsked, prepared.pace, log);
  }
  const data: DataContext | null = request.data && images
    ? { stores: await loadImages(loaded.model, images, request.data, reporter), images, options: request.data, reporter }
    : null;
  const decision = await chooseRanks(prepared.plan, request, {
    source: loaded, data, table, jointSearch, probes: request.probes ?? DEFAULT_PROBES, labelled: !accuracyNote, log, reporter,
  });
  const { plan, maxLoss: searched } = decision;
  const filter = searched?.filter ?? factorize(plan, loaded.topology, log);
  const layers = layerResults(plan, filter);
  const warnings = damageWarnings(layers, Boolean(request.data));
  for (const w of warnings) log(`warning: ${w}`);
  const made = data ? await fitAndTune(request, prepared, data, filter, searched, log) : { built: await buildCompressed(loaded, filter), written: filter, data: null, faithless: null, tuned: null };
  const timings = await timeResult(request, loaded.model, made.built.model, decision, table, log, reporter);
  const { saved, encoding } = await save(request, prepared, made.built, made.written, log);
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
    data: made.data,
    finetune: made.tuned,
    ...timings,
    warnings,
    heldOutWarning: made.faithless,
    maxLoss: searched?.report ?? null,
    saved,
    fileBytes: { before: loaded.weightBytes + loaded.jsonBytes, after: saved.weightBytes + saved.jsonBytes },
    newWeights: encoding,
  };
}

/** Loads the model, plans the layers and starting ranks, and checks the output folder and the images, all before any slow work. */
async function prepare(request: CompressRequest, log: Log, reporter: Reporter): Promise<Prepared> {
  // Fine-tuning chooses its epoch on fitting images that neither fit trains on.
  const carved = request.data && request.finetune ? carveValidation(planImages(request.data), request.data.seed) : null;
  const images = carved?.plan ?? (request.data ? planImages(request.data) : null);
  const loaded = await loadModel(request.input);
  const outputCheck = checkOutputDir(request.out, request.force, [loaded.jsonPath, path.dirname(loaded.jsonPath), ...loaded.shards.map((s) => s.path)]);
  const plan = planCompression(loaded.model, request, loaded.topology, reporter);
  if (request.finetune) {
    checkFinetune(loaded.model);
    if (tf.getBackend() === 'wasm') {
      const trained = request.finetune.layers === 'all' ? 'all' : plan.ranked.map((r) => r.info.name);
      const progress = reporter.phase('measuring a fine-tuning step\'s memory', 1, 'steps', USUALLY_QUICK);
      const step = await measureStep(loaded.model, trained);
      progress.finish();
      planFinetuneHeap(step, request.finetune.batch);
    }
  }
  if (plan.defaulted) log(plan.defaulted);
  for (const line of skippedNotes(plan.skipped.filter((s) => !s.byChoice))) log(line);
  for (const r of plan.ranked.filter((r) => r.slower)) {
    log(`warning: ${r.info.name} at rank ${r.rank} costs at least as many MACs as the original layer; written because of --allow-slower`);
  }
  let pace: number | null = null;
  if (request.data && images) {
    const macs = modelMacs(plan.layers).total;
    await probeImages(loaded.model, images.fit, request.data.pixels, shown(loaded.jsonPath), reporter, macs);
    pace = await forwardPace(loaded.model, macs, imageBatchSize(loaded.model));
  }
  const accuracyNote = request.data && images ? accuracyProblem(loaded.model, images.classes, request.data.data, request.data.labels) : null;
  if (accuracyNote) log(`warning: ${accuracyNote}`);
  for (const w of images ? heldOutWarnings(images.fit, images.holdout, images.holdoutSource === 'eval-data') : []) log(`warning: ${w}`);
  return { loaded, outputCheck, plan, images, carved, accuracyNote, pace };
}

/** With --measured: the layers' time table, and the target checked against it. */
async function measureIfAsked(request: CompressRequest, { loaded, plan }: Prepared, reporter: Reporter): Promise<TimeTable | null> {
  if (!request.measured) return null;
  const timingBatch = request.timingBatch ?? DEFAULT_TIMING_BATCH;
  checkBatchMemory(loaded.model, [timingBatch]);
  const table = await measureTimeTable(loaded, plan, timingBatch, reporter);
  checkMeasuredTarget(table, request.speedup!);
  return table;
}

/** The compressed model made from the data: fitted (unless --max-loss already fitted it), checked on the held-out images, fine-tuned if asked. */
async function fitAndTune(
  request: CompressRequest, { loaded, accuracyNote, carved }: Prepared, data: DataContext, filter: Factorization[], searched: MaxLossSearch | null, log: Log,
): Promise<{ built: ModelSource; written: Factorization[]; data: DataReport; faithless: string | null; tuned: FinetuneReport | null }> {
  const { stores, images, options } = data;
  if (!searched) log(`data reconstruction (${options.joint ? 'joint' : 'non-joint'}) on ${stores.fit.count} fitting images, ${stores.holdout.count} held out${images.holdoutSource === 'eval-data' ? ` from ${options.evalData}` : ''}`);
  const result = searched?.result ?? await dataReconstruction(loaded, filter, data);
  const { report, built, fitted: written } = result;
  if (accuracyNote) report.accuracy = null;
  const faithless = heldOutWarning(report.agreement.data, report.images.holdout, report.accuracy, report.agreement.commonest);
  const chance = report.accuracy && chanceWarning(loaded.model, report.accuracy.original, report.accuracy.labeled);
  if (chance) log(`warning: ${chance}`);
  let tuned: FinetuneReport | null = null;
  if (request.finetune) {
    const factorLayers = written.flatMap((f) => f.scheme.layers(f).map((l) => l.config.name));
    // Labels that are not the model's classes would teach it wrong ones.
    const tuning = accuracyNote ? { ...request.finetune, labelWeight: 0 } : request.finetune;
    // Fine-tuning trains on every fitting image not set aside, beyond the fit's --samples.
    const images = await loadFinetuneImages(data.images, carved!.validation, stores, options.pixels, data.reporter);
    tuned = await finetune(loaded.model, built.model, factorLayers, images, tuning, data.reporter);
  }
  return { built, written, data: report, faithless, tuned };
}

/** The timings the report carries: with --measured the full bench at the timing batch, with --speedup a short one at batch 1. */
async function timeResult(
  request: CompressRequest, original: tf.LayersModel, compressed: tf.LayersModel, decision: RankDecision, table: TimeTable | null, log: Log, reporter: Reporter,
): Promise<{ measured: MeasuredReport | null; quickTiming: BatchTiming | null }> {
  let measuredReport: MeasuredReport | null = null;
  const measured = decision.measured;
  if (table && measured) {
    log(`timing the original against the result at batch ${table.batch}`);
    const [bench] = await timeModels(original, compressed, [table.batch], DEFAULT_RUNS, DEFAULT_WARMUP, reporter);
    const { predictedMs, predictedSpeedup, predictedError } = measured;
    measuredReport = { target: request.speedup!, table, ranks: Object.fromEntries(measured.ranks), predictedMs, predictedSpeedup, predictedError, bench };
  }
  let quickTiming: BatchTiming | null = null;
  if (request.speedup !== undefined && !request.measured) {
    log(`timing the original against the result at batch 1 (short: ${MIN_RUNS} runs each; lowrank bench times it fully)`);
    [quickTiming] = await timeModels(original, compressed, [1], MIN_RUNS, 1, reporter);
  }
  return { measured: measuredReport, quickTiming };
}

/** Writes the compressed model once, with the records of what replaced what; disposes both models. */
async function save(
  request: CompressRequest, { loaded, outputCheck }: Prepared, built: ModelSource, written: Factorization[], log: Log,
): Promise<{ saved: SavedModel; encoding: Encoding }> {
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
  return { saved, encoding };
}


/** Multiply-accumulates a second the fits reach relative to the model's own forward pass (small ops, copies, exact solves). */
const FIT_PACE = 0.35;

const minutes = (s: number) => (s < 90 ? `${Math.max(1, Math.round(s))} s` : `${(s / 60).toFixed(1)} min`);

/**
 * Before the slow work of --data: the default sample count cut to the model's cost, the heap plan
 * (refused when it cannot fit), the joint rank search kept only when affordable (said when not),
 * and the time it should all take at `pace` (MACs a second of the probe's forward pass). Returns
 * how the joint search runs, or null when it does not.
 */
function planDataWork(
  { model, topology }: ModelSource, plan: CompressPlan, images: ImagePlan, data: ReconstructOptions, search: boolean, pace: number | null, log: Log,
): SearchMode | null {
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
  // How the joint search goes about this many layers, if affordable (budget.ts). The response spectra
  // are measured when every layer is closed-form and the search compares allocations or is skipped.
  const way = searchMode(costs);
  const mode = way === 'moves' || way === 'compare' ? way : null;
  const fits = search && mode ? SEARCH_FITS[mode] : 0;
  const count = { fit: n, holdout: images.holdout.length, score: searchScoreImages(n, mode ?? 'moves'), responses: search && responseSpectraApply(plan) ? Math.min(RESPONSE_IMAGES, n) : 0 };
  let work = estimateWork(model, costs, count, steps, batch, fits);
  const why = !search ? null : mode ? searchUnaffordable(work.search, fits) : way;
  const spectra = count.responses ? 'response spectra on the fitting images' : 'filter spectra';
  if (why) {
    log(`rank search by joint fits skipped (${why}); ranks from the layers' ${spectra}`);
    search = false;
    work = { ...work, search: 0 };
  } else if (search && mode === 'compare') {
    log(`rank search by joint fits: ${costs.length} layers are too many for moves of rank between pairs; it compares ${fits} allocations of them all (equal fractions of each layer's rank, the layers' ${spectra}, equal fractions over the layers those keep)`);
  } else work = { ...work, responses: 0 };
  planHeap(model, costs, { batch, heldImages: search ? count.score : 0, forwardBatch: imageBatchSize(model), networks: 3, adam: (l) => steps(l) > 0 });
  if (pace) {
    const seconds = (macs: number) => macs / (pace * FIT_PACE);
    const parts = [
      ...(search ? [`rank search ~${minutes(seconds(work.search))}`] : []),
      ...(work.responses ? [`response spectra ~${minutes(seconds(work.responses))}`] : []),
      `fit ~${minutes(seconds(work.fit))}`, `held-out check ~${minutes(work.evaluate / pace)}`,
    ];
    log(`estimated time: ${minutes(seconds(work.search + work.responses + work.fit) + work.evaluate / pace)} (${parts.join(', ')}; ${(pace / 1e9).toFixed(1)} GMAC/s measured on the model's forward pass)`);
  }
  return search ? mode : null;
}

export interface CompressResult {
  model: tf.LayersModel;
  /** The rewritten topology to save with `model`. */
  topology: ModelTopology;
  plan: CompressPlan;
  factorizations: Factorization[];
  layers: LayerResult[];
  totalMacsBefore: number;
  totalMacsAfter: number;
  theoreticalSpeedup: number;
}

/**
 * Filter-reconstruction compression of an in-memory model: plan, factorize, build.
 * `topology` is the model's saved topology (a loaded model's own); default: its toJSON().
 */
export async function compressModel(model: tf.LayersModel, options: CompressOptions & { topology?: ModelTopology }, log: Log = () => {}): Promise<CompressResult> {
  const topology = options.topology ?? modelTopology(model);
  const plan = planCompression(model, options, topology);
  if (plan.defaulted) log(plan.defaulted);
  const factorizations = factorize(plan, topology, log);
  const built = await buildCompressed({ model, topology }, factorizations);
  const layers = layerResults(plan, factorizations);
  return { ...built, plan, factorizations, layers, ...modelCost(plan, layers) };
}
