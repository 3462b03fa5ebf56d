/**
 * `compress --speedup X --measured`: ranks for a target in measured time on the current backend
 * instead of MACs (MACs and time differ by layer: a thin or small convolution costs more per MAC,
 * and every layer call costs a fixed amount).
 *
 * Each selected layer's replacement is timed at a handful of candidate ranks inside real runs of
 * whole models (bench's per-layer clock), at the timing batch, beside the original model; the time
 * the compressed models spend outside the replaced layers (untouched layers, the framework,
 * read-back) counts against the target. A dynamic programme over the resulting time-vs-rank
 * table then gives every layer a rank, or leaves it as it is, reaching X× in predicted time with
 * the least summed predicted error (the kernels' spectra, or the sensitivity measured on the
 * fitting images with --data). The caller checks the prediction with a real whole-model bench.
 */
import { performance } from 'node:perf_hooks';
import * as tf from '@tensorflow/tfjs';
import type { CompressPlan } from './plan.js';
import { layerMacs } from '../model/cost.js';
import { UserError } from '../errors.js';
import { filterCandidates, rankCap, type Candidate } from './ranks.js';
import type { Reporter } from '../report/progress.js';
import { formatMs } from '../report/format.js';
import { interpolate, rankLadder } from './sensitivity.js';
import { targetLayer } from '../schemes/index.js';
import type { ModelSource, ModelTopology } from '../model/topology.js';
import { buildCompressed } from '../model/rewrite.js';
import { timeModelsByLayer } from '../timing/layers.js';

/** Candidate ranks timed per layer (geometric from 1 to its highest saving rank). */
const TIMED_RANKS = 5;
/** Least time all the timed runs take together: enough rounds for stable means, a few seconds. */
const TIMING_MS = 2000;
/** Batch the layers and the final bench are timed at by default (the largest of bench's defaults). */
export const DEFAULT_TIMING_BATCH = 32;
const WARMUP = 2;
/** Untouched layers named in what holds the measured speedup back; the rest are summed. */
const NAMED_UNTOUCHED = 4;
/** Steps the time budget is cut into by the allocation. */
const BUDGET_STEPS = 4000;

export interface LayerTimes {
  name: string;
  /** The original layer's time inside the original model's runs. */
  originalMs: number;
  /**
   * Its replacement's time at each candidate rank, rank ascending. A rank is never taken as slower
   * than a higher one (that is timing noise): each time is at most the next rank's.
   */
  points: { rank: number; ms: number }[];
}

export interface TimeTable {
  batch: number;
  backend: string;
  /** The original model's time. */
  beforeMs: number;
  /** The compressed models' time outside the replaced layers (untouched layers, framework, read-back). */
  restMs: number;
  /** The untouched layers with MACs and their time in the compressed models: part of restMs. */
  untouched: { name: string; ms: number }[];
  layers: LayerTimes[];
  /** Timed rounds (one run of every model each). */
  runs: number;
  seconds: number;
}

const mean = (values: number[]) => values.reduce((s, v) => s + v, 0) / values.length;

/**
 * Times the original model and, per ladder step, a model with every ranked layer of `plan`
 * replaced at its step's rank (filter-reconstruction factors), round after round, every layer's
 * call() clocked inside the runs.
 */
export async function measureTimeTable(source: ModelSource, plan: CompressPlan, batch: number, reporter: Reporter): Promise<TimeTable> {
  const original = source.model;
  const start = performance.now();
  const ladders = plan.ranked.map(({ info, scheme }) => rankLadder(rankCap({ info, scheme }), TIMED_RANKS));
  const targets = plan.ranked.map(({ info }) => targetLayer(info, source.topology));
  // Each rung factorized once: a layer whose ladder is shorter stays at its top rung.
  const rungs = plan.ranked.map(({ scheme }, l) => ladders[l].map((rank) => {
    const f = scheme.factorize(targets[l], rank);
    return { rank, f, names: scheme.layers(f).map((n) => n.config.name) };
  }));
  const rungAt = (l: number, step: number) => rungs[l][Math.min(step, rungs[l].length - 1)];
  const models: tf.LayersModel[] = [];
  for (let step = 0; step < Math.max(...ladders.map((l) => l.length)); step++) {
    models.push((await buildCompressed(source, plan.ranked.map((_, l) => rungAt(l, step).f))).model);
  }
  let clocked;
  try {
    clocked = await timeModelsByLayer([original, ...models], batch, WARMUP, TIMING_MS, reporter);
  } finally {
    models.forEach((m) => m.dispose());
  }
  const [before, ...steps] = clocked;
  const blockMs = (step: number, l: number) => rungAt(l, step).names.reduce((s, name) => s + steps[step].layerMs.get(name)!, 0);
  const layers = plan.ranked.map(({ info }, l) => {
    const byRank = new Map<number, number[]>();
    steps.forEach((_, step) => {
      const { rank } = rungAt(l, step);
      byRank.set(rank, [...(byRank.get(rank) ?? []), blockMs(step, l)]);
    });
    const points = [...byRank].map(([rank, ms]) => ({ rank, ms: mean(ms) })).sort((a, b) => a.rank - b.rank);
    for (let k = points.length - 2; k >= 0; k--) points[k].ms = Math.min(points[k].ms, points[k + 1].ms);
    return { name: info.name, originalMs: before.layerMs.get(info.name)!, points };
  });
  const replaced = new Set(plan.ranked.map((r) => r.info.name));
  const untouched = plan.layers
    .filter((l) => (layerMacs(l) ?? 0) > 0 && !replaced.has(l.name))
    .map((l) => ({ name: l.name, ms: mean(steps.map((c) => c.layerMs.get(l.name) ?? 0)) }));
  return {
    batch,
    backend: tf.getBackend(),
    beforeMs: before.modelMs,
    restMs: mean(steps.map((c, step) => c.modelMs - plan.ranked.reduce((s, _, l) => s + blockMs(step, l), 0))),
    untouched,
    layers,
    runs: before.runs,
    seconds: (performance.now() - start) / 1000,
  };
}

/** A layer's replacement time at every rank 1…cap: linear between the timed ranks, flat beyond them. */
function timeCurve(times: LayerTimes, cap: number): Float64Array {
  return interpolate(times.points.map((p) => ({ rank: p.rank, error: p.ms })), cap);
}

/** The fastest the table allows (every layer at its fastest: a timed rank, or the original), and what holds it back. */
export function measuredReach(table: TimeTable): { maximum: number; heldBack: string } {
  const fastest = table.layers.reduce((s, l) => s + Math.min(l.originalMs, ...l.points.map((p) => p.ms)), 0);
  const pct = (ms: number) => `${((100 * ms) / table.beforeMs).toFixed(1)} %`;
  const untouched = [...table.untouched].sort((a, b) => b.ms - a.ms);
  // The slowest few by name; a big model's hundred others in one sum.
  const named = untouched.slice(0, NAMED_UNTOUCHED);
  const others = untouched.slice(NAMED_UNTOUCHED);
  const other = table.restMs - untouched.reduce((s, u) => s + u.ms, 0);
  const parts = [
    ...named.map((u) => `${u.name} ${pct(u.ms)}`),
    ...(others.length ? [`${others.length} other layers ${pct(others.reduce((s, u) => s + u.ms, 0))}`] : []),
    `outside the layers ${pct(Math.max(0, other))}`,
  ];
  return {
    maximum: table.beforeMs / (table.restMs + fastest),
    heldBack: `the rest of the model takes ${pct(table.restMs)} of the original's ${formatMs(table.beforeMs)} (${parts.join(', ')}), and the replaced layers at their fastest timed ranks still ${pct(fastest)}`,
  };
}

/** Refuses, before any slow work, a target the table says no ranks reach. */
export function checkMeasuredTarget(table: TimeTable, target: number): void {
  const { maximum, heldBack } = measuredReach(table);
  if (maximum < target) {
    throw new UserError(`--speedup ${target} --measured: in measured time at batch ${table.batch} on ${table.backend}, these layers can make the model at most ${maximum.toFixed(2)}× faster (${heldBack}); ask for less, or select more layers with --layers`);
  }
}

/** One way to treat a layer: replaced at `rank`, or left as it is (rank 0). */
export interface TimeOption {
  rank: number;
  ms: number;
  error: number;
}

/**
 * One option per layer with summed time at most `budgetMs` and the least summed error: dynamic
 * programming over the budget cut into BUDGET_STEPS steps, each option's time rounded up to whole
 * steps, so the choice never exceeds the budget in exact times. Null when nothing fits.
 */
export function allocateTime(options: TimeOption[][], budgetMs: number): { choice: TimeOption[]; ms: number; error: number } | null {
  if (!(budgetMs > 0)) return null;
  const step = budgetMs / BUDGET_STEPS;
  const steps = (o: TimeOption) => Math.ceil(o.ms / step);
  // least[b]: the least summed error of the layers so far within b steps.
  let least = new Float64Array(BUDGET_STEPS + 1);
  const picks: Int32Array[] = [];
  for (const layer of options) {
    const next = new Float64Array(BUDGET_STEPS + 1).fill(Infinity);
    const pick = new Int32Array(BUDGET_STEPS + 1).fill(-1);
    layer.forEach((o, k) => {
      for (let b = steps(o); b <= BUDGET_STEPS; b++) {
        const e = least[b - steps(o)] + o.error;
        if (e < next[b]) [next[b], pick[b]] = [e, k];
      }
    });
    picks.push(pick);
    least = next;
  }
  if (!Number.isFinite(least[BUDGET_STEPS])) return null;
  const choice: TimeOption[] = [];
  let b = BUDGET_STEPS;
  for (let l = options.length - 1; l >= 0; l--) {
    const o = options[l][picks[l][b]];
    choice.unshift(o);
    b -= steps(o);
  }
  return { choice, ms: choice.reduce((s, o) => s + o.ms, 0), error: least[BUDGET_STEPS] };
}

/** `plan`'s ranked layers with their filter error from the kernels' spectra. */
export function spectrumCandidates(plan: CompressPlan, topology: ModelTopology, reporter?: Reporter): Candidate[] {
  const schemes = new Map(plan.ranked.map((r) => [r.info, r.scheme]));
  return filterCandidates(plan.ranked.map((r) => r.info), (info) => schemes.get(info)!, topology, reporter);
}

export interface MeasuredChoice {
  plan: CompressPlan;
  /** Chosen rank per layer of the table; 0 for a layer left as it is. */
  ranks: Map<string, number>;
  /** Predicted model time and speedup at those ranks, and their summed predicted error. */
  predictedMs: number;
  predictedSpeedup: number;
  predictedError: number;
}

/**
 * `plan`'s ranks for `target`× in measured time: per layer, every rank from 1 to its highest saving
 * rank (time from the table, error from `candidates`) or the original layer (its measured time, no
 * error), chosen by `allocateTime` so that restMs plus the layers' times is at most beforeMs / target.
 * Call `checkMeasuredTarget` first (before any slow work).
 */
export function planByMeasuredTime(plan: CompressPlan, table: TimeTable, candidates: Candidate[], target: number): MeasuredChoice {
  const options = candidates.map((c, l) => {
    const cap = rankCap(c);
    const time = timeCurve(table.layers[l], cap);
    const ranks = Array.from({ length: cap }, (_, k) => ({ rank: k + 1, ms: time[k + 1], error: c.error[k + 1] }));
    return [{ rank: 0, ms: table.layers[l].originalMs, error: 0 }, ...ranks];
  });
  const allocation = allocateTime(options, table.beforeMs / target - table.restMs);
  // Past checkMeasuredTarget, every layer's fastest option fits; only the budget's rounding can miss it.
  if (!allocation) throw new UserError(`--speedup ${target} --measured: ${measuredReach(table).maximum.toFixed(2)}× is the most these layers reach in measured time, too close to the target to plan for; ask for a little less`);
  const ranks = new Map(candidates.map((c, l) => [c.info.name, allocation.choice[l].rank]));
  const left = plan.ranked.filter((r) => ranks.get(r.info.name) === 0);
  const predictedMs = table.restMs + allocation.ms;
  return {
    plan: {
      ...plan,
      ranked: plan.ranked.filter((r) => ranks.get(r.info.name)! > 0).map((r) => ({ ...r, rank: ranks.get(r.info.name)! })),
      skipped: [...plan.skipped, ...left.map((r) => ({ name: r.info.name, reason: `replacing does not pay: ${target}× in measured time is reached with less predicted error by leaving it`, byChoice: true as const }))],
    },
    ranks,
    predictedMs,
    predictedSpeedup: table.beforeMs / predictedMs,
    predictedError: allocation.error,
  };
}
