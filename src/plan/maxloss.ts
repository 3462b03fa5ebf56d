/**
 * `compress --max-loss P`: the fastest model whose loss on the held-out images is at most P points
 * (of top-1 accuracy when they are labelled, else of top-1 agreement with the original model).
 *
 * A bisection on the whole-model speedup target, geometric over the reachable range (from 1× to
 * every layer at rank 1): each probe is a whole compress at its target — ranks from the layers'
 * sensitivity measured once on the fitting images (as sweep does), filter factors, data
 * reconstruction — scored on the held-out images, which neither the ranks nor the fit see. A
 * probe within P raises the lower end of the range, one beyond P lowers the upper end; the fastest
 * probe within P is kept, and its model is the one written.
 */
import { performance } from 'node:perf_hooks';
import { factorize, planRanks, type CompressPlan } from './plan.js';
import type { Log } from '../report/progress.js';
import { UserError } from '../errors.js';
import { reportDataFit, type DataResult } from '../reconstruct/report.js';
import { formatRanks, maximumSpeedup } from './ranks.js';
import { heldOutTop1, scoreTop1, type HeldOutScore } from '../reconstruct/heldout.js';
import { fitToData, type DataFit } from '../reconstruct/index.js';
import type { Factorization } from '../schemes/index.js';
import { measureSensitivity, planForTarget } from './sensitivity.js';
import type { ModelSource } from '../model/topology.js';
import type { DataContext } from '../data/plan.js';

export const DEFAULT_PROBES = 5;

export interface Probe {
  target: number;
  ranks: Record<string, number>;
  theoreticalSpeedup: number;
  /** Points lost on the held-out images: top-1 accuracy, or agreement with the original. */
  loss: number;
  meets: boolean;
  /** Seconds of fitting and evaluating (0 for a probe whose ranks an earlier probe had). */
  seconds: number;
}

export interface MaxLossReport {
  limit: number;
  /** What the loss is of: top-1 accuracy on labelled held-out images, or agreement with the original's top-1. */
  measure: 'top-1' | 'agreement';
  heldOut: number;
  /** Every layer at rank 1: the top of the range searched. */
  maximum: number;
  probes: Probe[];
  /** The fastest probe within the limit. */
  chosen: Probe;
  sensitivity: { images: number; seconds: number };
  seconds: number;
}

/** Points lost by the data-reconstructed model: counted in images, so 5 of 1000 is exactly 0.5. */
export function heldOutLoss(report: HeldOutScore, holdout: number): { loss: number; measure: MaxLossReport['measure'] } {
  const points = (fraction: number, n: number) => (100 * Math.round(fraction * n)) / n;
  const a = report.accuracy;
  if (a) return { loss: points(a.original - a.data, a.labeled), measure: 'top-1' };
  return { loss: points(1 - report.agreement.data, holdout), measure: 'agreement' };
}

export interface MaxLossSearch {
  report: MaxLossReport;
  plan: CompressPlan;
  filter: Factorization[];
  result: DataResult;
}

export interface MaxLossOptions {
  source: ModelSource;
  /** Every selected layer at rank 1 (fastest.ts): the top of the range searched. */
  base: CompressPlan;
  data: DataContext;
  /** Points of held-out loss allowed. */
  limit: number;
  /** Speedup targets the search may try. */
  probes: number;
  /** Whether held-out accuracy may be used (false when the labels do not fit the model's outputs). */
  labelled: boolean;
  log: Log;
}

/** The bisection. Throws a UserError when no probe is within `limit`. */
export async function searchMaxLoss({ source, base, data, limit, probes, labelled, log }: MaxLossOptions): Promise<MaxLossSearch> {
  const { stores, options, reporter } = data;
  const original = source.model;
  const started = performance.now();
  const maximum = maximumSpeedup(base.layers, base.ranked).speedup;
  let [lo, hi] = [1, maximum];
  // Two decimals, rounded down: never above the range's top.
  const midpoint = () => Math.floor(100 * Math.sqrt(lo * hi)) / 100;
  if (midpoint() <= 1) {
    throw new UserError(`--max-loss ${limit}: these layers make the model at most ${maximum.toFixed(2)}× faster by MACs, too little to search; select more layers with --layers`);
  }
  const sensitivity = await measureSensitivity(source, base, stores.fit, reporter);
  // A probe needs only its top-1 against the original's and the labels; the chosen one alone gets
  // the full held-out evaluation (filter-only model and per-layer errors) for the report.
  const holdout = stores.holdout;
  const originalTop1 = await heldOutTop1(original, holdout);
  const labels = labelled ? Array.from({ length: holdout.batchCount }, (_, b) => holdout.labels(b)).flat() : null;
  const done: Probe[] = [];
  /** Probes by their ranks: two targets can give the same ranks, which are fitted once. */
  const byRanks = new Map<string, Probe>();
  let best: { probe: Probe; plan: CompressPlan; filter: Factorization[]; fit: DataFit } | null = null;
  let measure: MaxLossReport['measure'] = 'agreement';
  for (let i = 0; i < probes; i++) {
    const target = midpoint();
    if (target <= 1) break;
    const planned = planForTarget(base, sensitivity, target);
    const plan = { ...planned, allocation: null };
    const planRanked = planRanks(plan);
    const ranks = formatRanks(planRanked);
    const same = byRanks.get(ranks);
    let probe: Probe;
    if (same) {
      probe = { ...same, target, seconds: 0 };
    } else {
      log(`probe ${i + 1} of at most ${probes}: ${target}× (${ranks})`);
      const start = performance.now();
      const filter = factorize(plan, source.topology);
      const fit = await fitToData(source, filter, stores.fit, options, reporter);
      const scored = heldOutLoss(scoreTop1(originalTop1, await heldOutTop1(fit.model, holdout), labels), holdout.count);
      measure = scored.measure;
      probe = {
        target, ranks: Object.fromEntries(planRanked), theoreticalSpeedup: planned.allocation!.theoreticalSpeedup,
        loss: scored.loss, meets: scored.loss <= limit, seconds: (performance.now() - start) / 1000,
      };
      byRanks.set(ranks, probe);
      if (probe.meets && (!best || probe.theoreticalSpeedup > best.probe.theoreticalSpeedup)) {
        best?.fit.model.dispose();
        best = { probe, plan, filter, fit };
      } else {
        fit.model.dispose();
      }
    }
    log(`probe ${i + 1}: ${target}× loses ${probe.loss.toFixed(2)} points of ${measure} on ${stores.holdout.count} held-out images: ${probe.meets ? 'within' : 'beyond'} ${limit}`);
    done.push(probe);
    if (probe.meets) lo = target;
    else hi = target;
  }
  if (!best) {
    const smallest = done.reduce((a, p) => (p.target < a.target ? p : a));
    throw new UserError(`--max-loss ${limit}: even the smallest probe, ${smallest.target}× (${formatRanks(Object.entries(smallest.ranks))}), loses ${smallest.loss.toFixed(2)} points of ${measure} on ${stores.holdout.count} held-out images; allow more loss, or more --probes to try speedups closer to 1×`);
  }
  const { probe, plan, filter, fit } = best;
  const result = await reportDataFit(source, filter, fit, data);
  return {
    plan,
    filter,
    result,
    report: {
      limit, measure, heldOut: stores.holdout.count, maximum, probes: done, chosen: probe,
      sensitivity: { images: sensitivity.images, seconds: sensitivity.seconds }, seconds: (performance.now() - started) / 1000,
    },
  };
}
