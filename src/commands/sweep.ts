/**
 * `lowrank sweep` without the CLI: the accuracy/speed curve of one model (Jaderberg et al.'s Fig. 4).
 * For every target speedup it runs compress's stages — ranks by measured sensitivity → factorize →
 * data reconstruction → build — on one loaded model and images decoded once, times the result
 * against the original (bench's timing) and records filter-only and data-reconstructed top-1 and
 * agreement on the held-out images. The sensitivity curves do not depend on the target, so they
 * are measured once per sweep and kept in sweep.json with the finished points: a rerun of the same
 * command resumes where an interrupted one stopped.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { z } from 'zod';
import { factorize, planRanks, type CompressOptions, type CompressPlan } from '../plan/plan.js';
import { UserError, firstLine } from '../errors.js';
import { loadModel, saveModel, checkOutputDir, dominantEncoding, keptWeights, type LoadedModel, type OutputCheck } from '../model/io.js';
import { readCappedFile } from '../model/files.js';
import { listLayers } from '../model/layers.js';
import { dataReconstruction, type DataReport } from '../reconstruct/report.js';
import { maximumSpeedup } from '../plan/ranks.js';
import { heldOutWarnings } from '../data/images.js';
import { silentReporter, type ReconstructOptions, type Reporter } from '../reconstruct/index.js';
import { withinPhase, type Log } from '../report/progress.js';
import { renderChart, SERIES, speedChartSpec, type SpeedChart } from '../report/chart.js';
import { schemeFor, selectSchemes, type SchemeOptions } from '../schemes/index.js';
import { measureSensitivity, planForTarget, type Sensitivity } from '../plan/sensitivity.js';
import { layerResults, modelCost } from '../report/results.js';
import { planCompression } from '../plan/choose.js';
import { selectLayers } from '../plan/select.js';
import { withReplacementRecords } from '../model/records.js';
import { timeModels } from '../timing/loop.js';
import { loadImages, planImages, type DataContext, type ImagePlan } from '../data/plan.js';

export const DEFAULT_SPEEDUPS = [2, 3, 4, 6, 8, 12];
/** Batch sizes every point is timed at; the plot uses the last. */
export const SWEEP_BATCHES = [1, 32];
export const SWEEP_FILE = 'sweep.json';

export interface SweepRequest extends SchemeOptions {
  input: string;
  out: string;
  speedups: number[];
  layers?: string[];
  data: ReconstructOptions;
  /** Save every point's model under <out>/models/<target>x/. */
  keep: boolean;
  /** Timing: runs and warm-up runs per model and batch size. */
  runs: number;
  warmup: number;
  backend: string;
}

/** Everything a point's result depends on besides its target: a resumed sweep must match. */
export interface SweepSettings {
  /** sha256 of model.json and its weight files. */
  model: string;
  backend: string;
  scheme: string;
  basis: string;
  separable: boolean;
  layers: string[] | null;
  data: string;
  evalData: string | null;
  holdout: number | null;
  samples: number | 'auto';
  joint: boolean;
  iterations: number | 'auto';
  batch: number;
  seed: number;
  pixels: ReconstructOptions['pixels'];
  classes: string[];
  keep: boolean;
  runs: number;
  warmup: number;
}

export interface SweepPoint {
  target: number;
  ranks: Record<string, number>;
  theoreticalSpeedup: number;
  /** Measured speedup (median of paired original/compressed runs) and median times, per batch size. */
  measured: { batch: number; speedup: number; beforeMs: number; afterMs: number }[];
  /** Top-1 on the labelled held-out images (null without labels). */
  accuracy: { original: number; filter: number; data: number } | null;
  /** Share of held-out images whose top-1 is the original model's. */
  agreement: { filter: number; data: number };
  /** Data reconstruction, held-out evaluation, timing, and the whole point. */
  seconds: { fit: number; evaluate: number; timing: number; point: number };
  /** The point's model, relative to the sweep folder (with --keep). */
  model: string | null;
  finishedAt: string;
}

export interface Unreachable {
  target: number;
  maximum: number;
  heldBack: string;
}

export interface SweepFile {
  lowrankSweep: 1;
  /** For people: the model as given. */
  input: string;
  settings: SweepSettings;
  images: { fit: number; holdout: number; labeled: number };
  sensitivity: Sensitivity;
  points: SweepPoint[];
}

export interface SweepReport extends SweepFile {
  unreachable: Unreachable[];
  /** Targets computed by this run (the others came from sweep.json). */
  computed: number[];
}

const count = z.number().int().nonnegative();
const share = z.number().min(0).max(1);
const seconds = z.number().finite().nonnegative();
const positive = z.number().finite().positive();

/**
 * What sweep.json must hold to be resumed: the shape of `SweepFile`, with values in range. The
 * settings are compared with the command's own (resumeFrom), so only their being an object is
 * checked here. zod gives the path of what is wrong (points[0].measured) for the message.
 */
const SWEEP_SCHEMA = z.object({
  lowrankSweep: z.literal(1),
  input: z.string(),
  settings: z.record(z.string(), z.unknown()),
  images: z.object({ fit: count, holdout: count, labeled: count }),
  sensitivity: z.object({
    layers: z.array(z.object({
      name: z.string(),
      points: z.array(z.object({ rank: z.number().int().positive(), error: z.number().finite().nonnegative() })).nonempty(),
    })),
    images: count,
    seconds,
  }),
  points: z.array(z.object({
    target: z.number().finite().gt(1),
    ranks: z.record(z.string(), z.number().int().positive()).refine((r) => Object.keys(r).length > 0, 'names no layer'),
    theoreticalSpeedup: positive,
    measured: z.array(z.object({ batch: z.number().int().positive(), speedup: positive, beforeMs: positive, afterMs: positive }))
      .refine((m) => SWEEP_BATCHES.every((b) => m.some((t) => t.batch === b)), `needs a timing at batch ${SWEEP_BATCHES.join(' and ')}`),
    accuracy: z.object({ original: share, filter: share, data: share }).nullable(),
    agreement: z.object({ filter: share, data: share }),
    seconds: z.object({ fit: seconds, evaluate: seconds, timing: seconds, point: seconds }),
    model: z.string().nullable(),
    finishedAt: z.string(),
  })).superRefine((points, ctx) => {
    const twice = points.find((p, i) => points.findIndex((q) => q.target === p.target) !== i);
    if (twice) ctx.addIssue({ code: z.ZodIssueCode.custom, message: `target ${twice.target} appears twice` });
  }),
});

/** Largest sweep.json read: a point takes about a kilobyte. */
const MAX_SWEEP_BYTES = 64 * 1024 * 1024;

/** sweep.json, validated: anything but a sweep lowrank wrote is refused with what is wrong and how to start over. */
function readSweepFile(file: string): SweepFile {
  const shown = path.relative(process.cwd(), file) || file;
  const startOver = 'delete it to start the sweep over, or give another --out';
  const text = readCappedFile(file, shown, MAX_SWEEP_BYTES, startOver, 'a sweep.json').toString('utf8');
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new UserError(`${shown} is not readable JSON (${firstLine(err)}); ${startOver}`);
  }
  if ((json as Partial<SweepFile> | null)?.lowrankSweep !== 1) throw new UserError(`${shown} was not written by lowrank sweep; give another --out`);
  const parsed = SWEEP_SCHEMA.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const where = issue.path.map((p) => (typeof p === 'number' ? `[${p}]` : `.${p}`)).join('').replace(/^\./, '');
    throw new UserError(`${shown} is damaged (${where ? `${where}: ` : ''}${issue.message}); ${startOver}`);
  }
  // The settings are checked key by key against the command's own before they are used (resumeFrom).
  return { ...parsed.data, settings: parsed.data.settings as unknown as SweepSettings };
}

/** Writes `text` to `file` through a temporary file and a rename: readers never see half a file. */
export function writeAtomically(file: string, text: string | Buffer): void {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.partial-${process.pid}`);
  fs.writeFileSync(tmp, text);
  fs.renameSync(tmp, file);
}

function modelFingerprint(loaded: LoadedModel): string {
  const hash = createHash('sha256');
  for (const file of [loaded.jsonPath, ...loaded.shards.map((s) => s.path)]) hash.update(fs.readFileSync(file));
  return hash.digest('hex');
}

/** The folder name of a point's model: models/4x, models/2.5x. */
export const pointFolder = (target: number) => path.join('models', `${target}x`);

/**
 * The finished points of an earlier run in `out`, or none. Anything in `out` that is not a sweep
 * of these settings is refused: a sweep only ever adds to its own folder.
 */
function resumeFrom(out: string, settings: SweepSettings): SweepFile | null {
  if (!fs.existsSync(out)) return null;
  if (!fs.statSync(out).isDirectory()) throw new UserError(`--out ${out} exists and is not a folder; give a new --out`);
  const file = path.join(out, SWEEP_FILE);
  if (!fs.existsSync(file)) {
    if (fs.readdirSync(out).length === 0) return null;
    throw new UserError(`--out ${out} exists and holds no ${SWEEP_FILE}; give a new --out (a sweep only writes into its own folder)`);
  }
  const previous = readSweepFile(file);
  const differ = (Object.keys(settings) as (keyof SweepSettings)[]).filter((k) => JSON.stringify(previous.settings[k]) !== JSON.stringify(settings[k]));
  if (differ.length) {
    const shown = (k: keyof SweepSettings) => (k === 'model' ? 'a different model' : `${k} ${JSON.stringify(previous.settings[k])}, now ${JSON.stringify(settings[k])}`);
    throw new UserError(`--out ${out} holds a sweep with other settings (${differ.map(shown).join('; ')}); run the same command to resume it, or give a new --out`);
  }
  return previous;
}

const byTarget = (a: { target: number }, b: { target: number }) => a.target - b.target;

export async function runSweep(request: SweepRequest, log: Log = () => {}, reporter: Reporter = silentReporter): Promise<SweepReport> {
  const images = planImages(request.data);
  const loaded = await loadModel(request.input);
  checkSweepOut(request.out, loaded);
  const settings = sweepSettings(request, loaded, images);
  const previous = resumeFrom(request.out, settings);
  for (const w of heldOutWarnings(images.fit, images.holdout, images.holdoutSource === 'eval-data')) log(`warning: ${w}`);
  const { reachable, unreachable } = reachableTargets(request, loaded, log);

  const points = previous ? [...previous.points] : [];
  const pending = reachable.filter((t) => !points.some((p) => p.target === t));
  if (previous) log(`resuming: ${reachable.length - pending.length} of ${reachable.length} points already in ${SWEEP_FILE}, ${pending.length} to compute`);
  // Every point's model folder must be free for --keep (or a model lowrank wrote) before the first fit, not after it.
  const inputFiles = [loaded.jsonPath, ...loaded.shards.map((s) => s.path)];
  const keptChecks = new Map(request.keep ? pending.map((t) => [t, checkOutputDir(path.join(request.out, pointFolder(t)), true, inputFiles)]) : []);
  let file: SweepFile = previous ?? {
    lowrankSweep: 1, input: path.relative(process.cwd(), loaded.jsonPath), settings, images: { fit: 0, holdout: 0, labeled: 0 }, sensitivity: { layers: [], images: 0, seconds: 0 }, points,
  };
  if (pending.length) {
    const options: CompressOptions = { scheme: request.scheme, basis: request.basis, separable: request.separable, layers: request.layers, speedup: reachable[0] };
    const base = planCompression(loaded.model, options, loaded.topology, reporter);
    for (const s of base.skipped) log(`warning: left ${s.name} as it is: ${s.reason}`);
    const stores = await loadImages(loaded.model, images, request.data, reporter);
    const sensitivity = previous?.sensitivity ?? await measureSensitivity(loaded, base, stores.fit, reporter);
    // Written before the first point: a folder with a model in it always holds its sweep.json.
    fs.mkdirSync(request.out, { recursive: true });
    const save = () => writeAtomically(path.join(request.out, SWEEP_FILE), `${JSON.stringify(file, null, 2)}\n`);
    file = { ...file, sensitivity };
    save();
    const bar = reporter.phase('sweep', pending.length, 'points');
    for (const [done, target] of pending.entries()) {
      const plan = planForTarget(base, sensitivity, target);
      const data: DataContext = { stores, images, options: request.data, reporter: withinPhase(bar, done, `${target}×: `) };
      const { point, accuracy } = await sweepPoint(request, loaded, plan, data, keptChecks.get(target), () => bar.update(done, `${target}×: timing`));
      points.push(point);
      points.sort(byTarget);
      const counts = { fit: stores.fit.count, holdout: stores.holdout.count, labeled: accuracy?.labeled ?? 0 };
      file = { ...file, images: counts, sensitivity, points };
      save();
      bar.update(done + 1);
    }
    bar.finish();
  }
  loaded.model.dispose();
  return { ...file, unreachable, computed: pending };
}

/**
 * A new --out gets the usual checks; an existing one must be a sweep's own folder (resumeFrom)
 * that does not hold the input (a model --keep wrote there, swept again).
 */
function checkSweepOut(out: string, loaded: LoadedModel): void {
  if (!fs.existsSync(out)) checkOutputDir(out, false, [loaded.jsonPath, path.dirname(loaded.jsonPath)]);
  else if (path.relative(fs.realpathSync(out), fs.realpathSync(loaded.jsonPath)).split(path.sep)[0] !== '..') {
    throw new UserError(`--out ${out} holds the input model; the input is never modified: give another --out`);
  }
}

/** What a sweep was run with, recorded in sweep.json so that a resumed run can tell it continues the same sweep. */
function sweepSettings(request: SweepRequest, loaded: LoadedModel, images: ImagePlan): SweepSettings {
  return {
    model: modelFingerprint(loaded),
    backend: request.backend,
    scheme: request.scheme,
    basis: request.basis,
    separable: request.separable,
    layers: request.layers ?? null,
    data: path.resolve(request.data.data),
    evalData: request.data.evalData ? path.resolve(request.data.evalData) : null,
    holdout: request.data.evalData ? null : request.data.holdout,
    samples: request.data.samples,
    joint: request.data.joint,
    iterations: request.data.iterations,
    batch: request.data.batch,
    seed: request.data.seed,
    pixels: request.data.pixels,
    classes: images.classes,
    keep: request.keep,
    runs: request.runs,
    warmup: request.warmup,
  };
}

/** Which targets the selected layers can reach at all: the rest are reported and skipped (none reachable: refused). */
function reachableTargets(request: SweepRequest, loaded: LoadedModel, log: Log): { reachable: number[]; unreachable: Unreachable[] } {
  const schemes = selectSchemes(request);
  const layers = listLayers(loaded.model);
  const { chosen, defaulted } = selectLayers(layers, schemes, request.layers, undefined);
  if (defaulted) log(defaulted);
  const max = maximumSpeedup(layers, chosen.map((info) => ({ info, scheme: schemes.of(info) })));
  const targets = [...new Set(request.speedups)].sort((a, b) => a - b);
  const unreachable = targets.filter((t) => t > max.speedup).map((target) => ({ target, maximum: max.speedup, heldBack: max.heldBack }));
  for (const u of unreachable) log(`warning: cannot reach ${u.target}×: these layers make the model at most ${u.maximum.toFixed(2)}× faster by MACs (${u.heldBack}); skipped`);
  const reachable = targets.filter((t) => t <= max.speedup);
  if (reachable.length === 0) {
    throw new UserError(`none of --speedups ${targets.join(',')} can be reached: these layers make the model at most ${max.speedup.toFixed(2)}× faster by MACs (${max.heldBack}); ask for less, or select more layers with --layers`);
  }
  return { reachable, unreachable };
}

/** One point of the sweep: the plan's factors fitted to the data, timed against the original, and (with --keep) written. */
async function sweepPoint(
  request: SweepRequest, loaded: LoadedModel, plan: CompressPlan, data: DataContext, keptCheck: OutputCheck | undefined, timing: () => void,
): Promise<{ point: SweepPoint; accuracy: DataReport['accuracy'] }> {
  const started = performance.now();
  const target = plan.allocation!.target;
  const filter = factorize(plan, loaded.topology);
  const cost = modelCost(plan, layerResults(plan, filter));
  const result = await dataReconstruction(loaded, filter, data);
  // The filter-only and data-reconstructed models share one architecture: one timing serves both.
  timing();
  const timingStart = performance.now();
  const timings = await timeModels(loaded.model, result.built.model, SWEEP_BATCHES, request.runs, request.warmup);
  const timingSeconds = (performance.now() - timingStart) / 1000;
  let model: string | null = null;
  if (request.keep) {
    model = pointFolder(target);
    // The new weights in the input's precision, the others byte for byte, as compress writes them.
    const changed = result.fitted.flatMap((f) => f.scheme.layers(f).map((l) => l.config.name));
    await saveModel(result.built.model, path.join(request.out, model), {
      force: true, check: keptCheck, topology: result.built.topology,
      userDefinedMetadata: withReplacementRecords(loaded.userDefinedMetadata, result.fitted),
      weights: keptWeights(result.built.model, loaded, changed, dominantEncoding(loaded)),
    });
  }
  result.built.model.dispose();
  const accuracy = result.report.accuracy;
  const point: SweepPoint = {
    target,
    ranks: Object.fromEntries(planRanks(plan)),
    theoreticalSpeedup: cost.theoreticalSpeedup,
    measured: timings.map((t) => ({ batch: t.batch, speedup: t.speedup, beforeMs: t.before.medianMs, afterMs: t.after.medianMs })),
    accuracy: accuracy && { original: accuracy.original, filter: accuracy.filter, data: accuracy.data },
    agreement: { filter: result.report.agreement.filter, data: result.report.agreement.data },
    seconds: { ...result.report.seconds, timing: timingSeconds, point: (performance.now() - started) / 1000 },
    model,
    finishedAt: new Date().toISOString(),
  };
  return { point, accuracy };
}

/** The measured speedup of a point at batch size `batch` (the plot's x: the largest batch). */
export const measuredAt = (p: SweepPoint, batch = SWEEP_BATCHES[SWEEP_BATCHES.length - 1]) => p.measured.find((m) => m.batch === batch)!.speedup;

/** Accuracy when the held-out images are labelled, else agreement with the original. */
const labelled = (file: SweepFile) => file.points.every((p) => p.accuracy !== null);

export function sweepChart(file: SweepFile): SpeedChart {
  const useAccuracy = labelled(file);
  const batch = SWEEP_BATCHES[SWEEP_BATCHES.length - 1];
  const valueOf = (p: SweepPoint, series: 'filter' | 'data') => 100 * (useAccuracy ? p.accuracy![series] : p.agreement[series]);
  const s = file.settings;
  const scheme = schemeFor({ scheme: s.scheme, basis: s.basis as SchemeOptions['basis'], separable: s.separable }).label;
  return {
    title: file.input,
    subtitle: [`${scheme} on ${Object.keys(file.points[0]?.ranks ?? {}).join(', ')}`, `ranks by measured sensitivity, ${file.images.fit} fitting images`],
    xTitle: `measured speedup at batch ${batch} (×, ${s.backend})`,
    yTitle: useAccuracy ? `top-1 accuracy on ${file.images.labeled} held-out images (%)` : `top-1 agreement with the original on ${file.images.holdout} held-out images (%)`,
    data: file.points.flatMap((p) => (['filter', 'data'] as const).map((series) => ({
      series: SERIES[series], speedup: measuredAt(p, batch), value: valueOf(p, series), target: p.target, label: `${p.target}×`,
    }))),
    reference: useAccuracy && file.points.length ? { value: 100 * file.points[0].accuracy!.original, label: `original ${(100 * file.points[0].accuracy!.original).toFixed(1)} %` } : null,
  };
}

const csvCell = (v: string | number | null) => {
  const text = v === null ? '' : String(v);
  return /[",\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
};

/** One row per point. */
export function sweepCsv(file: SweepFile): string {
  const header = [
    'target', 'ranks', 'theoretical_speedup', ...SWEEP_BATCHES.map((b) => `measured_speedup_b${b}`),
    'top1_original', 'top1_filter', 'top1_data', 'agreement_filter', 'agreement_data', 'fit_seconds', 'point_seconds',
  ];
  const rows = file.points.map((p) => [
    p.target, Object.entries(p.ranks).map(([n, r]) => `${n}=${r}`).join(','), p.theoreticalSpeedup, ...SWEEP_BATCHES.map((b) => measuredAt(p, b)),
    p.accuracy?.original ?? null, p.accuracy?.filter ?? null, p.accuracy?.data ?? null, p.agreement.filter, p.agreement.data, p.seconds.fit, p.seconds.point,
  ]);
  return [header, ...rows].map((r) => r.map(csvCell).join(',')).join('\n') + '\n';
}

/** sweep.csv, sweep.svg and sweep.png beside sweep.json; returns the files written. */
export async function writeSweepOutputs(out: string, file: SweepFile): Promise<string[]> {
  const chart = await renderChart(speedChartSpec(sweepChart(file)));
  const files: [string, string | Buffer][] = [['sweep.csv', sweepCsv(file)], ['sweep.svg', chart.svg], ['sweep.png', chart.png]];
  for (const [name, content] of files) writeAtomically(path.join(out, name), content);
  return [SWEEP_FILE, ...files.map(([name]) => name)].map((name) => path.join(out, name));
}
