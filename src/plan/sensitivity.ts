/**
 * Rank selection from measurements on the fitting images (never the held-out ones, so the held-out
 * report stays an honest check of the choice):
 *
 * - `planByJointSearch` (`compress --speedup X --data …`): whole allocations at the target, each
 *   fitted jointly as the run will fit it and scored on fitting images the fit did not see; rank
 *   moves between layers while the score improves. Layers interact under the joint fit (a later
 *   layer corrects an earlier one's error), which no per-layer measurement sees.
 * - `measureSensitivity` and `planForTarget` (`sweep`, one measurement for every target): per
 *   layer and for a ladder of candidate ranks, the layer alone is factorized and its last factor
 *   solved exactly on a sample of the fitting images; the relative change of the model's output
 *   ‖f − f̂‖/‖f‖ is that layer's cost at that rank (interpolated between the measured ranks), and the
 *   allocation of ranks.ts meets each target with the least summed cost.
 */
import * as tf from '@tensorflow/tfjs';
import { performance } from 'node:perf_hooks';
import { buildCompressed, leftByChoice, type CompressPlan } from './plan.js';
import { convGeometry } from '../model/cost.js';
import { DEFAULT_CACHE_BYTES, imageSamples, LayerCache, type ImageStore } from '../data/store.js';
import { DEFAULT_FIT, fitLayer } from '../reconstruct/fit.js';
import { addOffset, fitToData, silentReporter, weightValue, type ReconstructOptions } from '../reconstruct/index.js';
import { linearResponse } from '../linalg/conv-ops.js';
import type { Reporter } from '../report/progress.js';
import { makeTap } from '../reconstruct/taps.js';
import type { LayerInfo } from '../model/layers.js';
import { allocateRanks, equalFractionError, formatRanks, rankCap, ranksForSpeedup, theoreticalSpeedup, type Candidate, type Replacement } from './ranks.js';
import { selectSchemes, targetLayer } from '../schemes/index.js';
import type { ModelTopology } from '../model/topology.js';

/** Images the sensitivity of each (layer, rank) is measured on. */
export const SENSITIVITY_IMAGES = 256;
/** Candidate ranks measured per layer (geometric between 1 and the layer's highest saving rank). */
export const SENSITIVITY_RANKS = 8;

/** Up to `count` distinct ranks from 1 to `cap`, spaced geometrically, always including both ends. */
export function rankLadder(cap: number, count: number): number[] {
  const out = new Set<number>([1, cap]);
  for (let i = 1; i < count - 1; i++) out.add(Math.round(Math.exp((Math.log(cap) * i) / (count - 1))));
  return [...out].filter((r) => r >= 1 && r <= cap).sort((a, b) => a - b);
}

/** A curve over ranks 0…full from measurements at some ranks: linear between them, flat beyond. */
export function interpolate(measured: { rank: number; error: number }[], full: number): Float64Array {
  const out = new Float64Array(full + 1);
  for (let r = 0; r <= full; r++) {
    const hi = measured.findIndex((m) => m.rank >= r);
    if (hi <= 0) out[r] = measured[hi < 0 ? measured.length - 1 : 0].error;
    else {
      const a = measured[hi - 1];
      const b = measured[hi];
      out[r] = a.error + ((b.error - a.error) * (r - a.rank)) / (b.rank - a.rank);
    }
  }
  return out;
}

/** The model's first output on the sample, as one tensor per batch (kept). */
async function outputs(model: tf.LayersModel, batches: tf.Tensor4D[]): Promise<tf.Tensor[]> {
  return batches.map((x) => tf.tidy(() => ([model.predict(x)].flat()[0] as tf.Tensor).reshape([x.shape[0], -1])));
}

/** Per layer, the measured output error at each candidate rank: independent of the target. */
export interface Sensitivity {
  layers: { name: string; points: { rank: number; error: number }[] }[];
  /** Fitting images measured on. */
  images: number;
  seconds: number;
}

/**
 * Measures every ranked layer of `plan` at its ladder of candidate ranks. The curves do not depend
 * on the speedup target, so one measurement serves every target (see `planForTarget`).
 */
export async function measureSensitivity(
  original: tf.LayersModel, topology: ModelTopology, plan: CompressPlan, images: ImageStore, reporter: Reporter,
): Promise<Sensitivity> {
  const start = performance.now();
  const sample = images.head(SENSITIVITY_IMAGES);
  const batches: tf.Tensor4D[] = [];
  for await (const b of sample.batches()) batches.push(b.x);
  const n = sample.count;
  const reference = await outputs(original, batches);
  const norm = reference.reduce((s, y) => s + tf.tidy(() => y.square().sum().dataSync()[0]), 0);
  const layers = plan.ranked.map((r) => r.info);
  const schemes = plan.ranked.map((r) => r.scheme);
  const ladders = layers.map((info, i) => rankLadder(rankCap({ info, scheme: schemes[i] }), SENSITIVITY_RANKS));
  const progress = reporter.phase('measuring layer sensitivity', ladders.reduce((s, l) => s + l.length, 0), 'ranks');
  let done = 0;
  const measured: Sensitivity['layers'] = [];
  for (const [i, info] of layers.entries()) {
    const target = targetLayer(info, topology);
    const { kh, kw, C, N } = target.geometry;
    const kernel = tf.tensor4d(target.kernel, [kh, kw, C, N]);
    const tap = makeTap(original, [info.name], false);
    const cache = new LayerCache(imageSamples(sample, (x) => tf.tidy(() => {
      const phi = tap(x).inputs[0];
      return { x: phi, y: linearResponse(phi, kernel, target.geometry) };
    })), DEFAULT_CACHE_BYTES);
    await cache.fill(() => {});
    const points: { rank: number; error: number }[] = [];
    for (const rank of ladders[i]) {
      const initial = schemes[i].factorize(target, rank);
      const form = schemes[i].factored(target, rank);
      const fit = await fitLayer(form, initial.factors, cache, target.bias !== null, { ...DEFAULT_FIT, iterations: 0, seed: 0 }, { iteration() {}, solve() {} });
      form.dispose();
      const solved = { ...initial, factors: fit.factors.map(weightValue), bias: addOffset(target.bias, fit.offset) };
      tf.dispose(fit.factors);
      const built = await buildCompressed(original, topology, [solved]);
      const approx = await outputs(built.model, batches);
      const sse = approx.reduce((s, y, k) => s + tf.tidy(() => y.sub(reference[k]).square().sum().dataSync()[0]), 0);
      tf.dispose(approx);
      built.model.dispose();
      points.push({ rank, error: Math.sqrt(sse / Math.max(norm, 1e-30)) });
      progress.update(++done);
      await new Promise((resolve) => setImmediate(resolve));
    }
    // More rank never hurts the best filter reconstruction; keep the measured curve monotone so
    // noise on a small sample cannot make the allocator prefer fewer ranks for their own sake.
    for (let k = points.length - 2; k >= 0; k--) points[k].error = Math.max(points[k].error, points[k + 1].error);
    cache.dispose();
    kernel.dispose();
    measured.push({ name: info.name, points });
  }
  progress.finish();
  tf.dispose([...batches, ...reference]);
  return { layers: measured, images: n, seconds: (performance.now() - start) / 1000 };
}

/** `plan`'s ranked layers as candidates whose error at each rank is their measured sensitivity. */
export function sensitivityCandidates(plan: CompressPlan, sensitivity: Sensitivity): Candidate[] {
  return plan.ranked.map(({ info, scheme }) => {
    const points = sensitivity.layers.find((l) => l.name === info.name)!.points;
    return { info, scheme, error: interpolate(points, scheme.fullRank(convGeometry(info))) };
  });
}

/** `plan`'s ranks re-chosen for `target`× from measured sensitivities (of `plan`'s ranked layers). */
export function planForTarget(plan: CompressPlan, sensitivity: Sensitivity, target: number): CompressPlan {
  const candidates = sensitivityCandidates(plan, sensitivity);
  const allocation = allocateRanks(plan.layers, candidates, target)!;
  return {
    ...plan,
    ranked: plan.ranked.filter((r) => allocation.ranks.has(r.info.name)).map((r) => ({ ...r, rank: allocation.ranks.get(r.info.name)! })),
    skipped: [...plan.skipped, ...plan.ranked.filter((r) => !allocation.ranks.has(r.info.name)).map((r) => ({ name: r.info.name, reason: leftByChoice(target, 'measured output error'), byChoice: true as const }))],
    allocation: { ...allocation, target, baselineError: equalFractionError(plan.layers, candidates, target), basis: 'measured' },
  };
}

/**
 * Fitting images set aside to score each allocation of the joint search on; it is fitted on all the
 * others. Few are kept back because the fit needs the rest: a layer whose output is one position
 * (the character CNN's conv3) gets one equation per image, so a fit on fewer images favours low
 * ranks there that the real fit on all of them would not.
 */
export const SEARCH_SCORE_IMAGES = 200;
/** Allocations the joint search fits at most for one target, equal fractions included. */
export const SEARCH_EVALUATIONS = 5;
/** A move's first step, as a fraction of the rank of the layer that pays; halved when no move helps. */
const FIRST_STEP = 1 / 8;

/** One allocation as the joint search measured it. */
export interface JointPoint {
  ranks: Map<string, number>;
  theoreticalSpeedup: number;
  /** How far the fitted model's output is from the original's on the scoring images (see `divergence`). */
  divergence: number;
}

export interface JointSearch {
  plan: CompressPlan;
  chosen: JointPoint;
  /** The equal-fraction ranks (`ranksForSpeedup`), always the first evaluated. */
  equal: JointPoint;
  /** Every allocation fitted, in the order tried. */
  evaluated: JointPoint[];
  images: { solve: number; score: number };
  seconds: number;
}

/** True when the model's first output is a softmax: its outputs are class probabilities. */
function endsInSoftmax(model: tf.LayersModel): boolean {
  const last = model.outputs[0].sourceLayer as tf.layers.Layer;
  return (last.getConfig() as Record<string, unknown>).activation === 'softmax';
}

/**
 * How far `approx` is from `reference` (batches of one row per image): for probabilities the mean
 * KL(p‖q), which every image contributes to smoothly (unlike top-1, which a few images flip), else
 * the relative error ‖f − f̂‖/‖f‖.
 */
export function divergence(reference: tf.Tensor[], approx: tf.Tensor[], probabilities: boolean): number {
  let sum = 0;
  let norm = 0;
  let rows = 0;
  reference.forEach((p, k) => tf.tidy(() => {
    const q = approx[k];
    if (probabilities) {
      const tiny = 1e-30;
      sum += p.mul(p.maximum(tiny).log().sub(q.maximum(tiny).log())).sum().dataSync()[0];
      rows += p.shape[0];
    } else {
      sum += p.sub(q).square().sum().dataSync()[0];
      norm += p.square().sum().dataSync()[0];
    }
  }));
  return probabilities ? sum / Math.max(rows, 1) : Math.sqrt(sum / Math.max(norm, 1e-30));
}

/**
 * `ranks` with rank moved from layer `pay` to layer `gain`: `pay` lowered by `step` (and further if
 * `gain` needs it to rise by one rank at all), then `gain` raised as far as `target`× allows. Null
 * when `pay` cannot give that much or `gain` is at its cap.
 */
export function moveRanks(
  layers: LayerInfo[], candidates: Replacement[], ranks: Map<string, number>, gain: Replacement, pay: Replacement, step: number, target: number,
): Map<string, number> | null {
  const next = new Map(ranks);
  const rank = (c: Replacement) => next.get(c.info.name)!;
  const meets = () => theoreticalSpeedup(layers, candidates, next) >= target;
  if (rank(gain) >= rankCap(gain) || rank(pay) - step < 1) return null;
  next.set(pay.info.name, rank(pay) - step);
  next.set(gain.info.name, rank(gain) + 1);
  while (!meets()) {
    if (rank(pay) <= 1) return null;
    next.set(pay.info.name, rank(pay) - 1);
  }
  while (rank(gain) < rankCap(gain)) {
    next.set(gain.info.name, rank(gain) + 1);
    if (meets()) continue;
    next.set(gain.info.name, rank(gain) - 1);
    break;
  }
  return next;
}

/**
 * Ranks for `target`× chosen by fitting whole allocations jointly, as the run then fits them: every
 * allocation tried gets the run's own data fit (its Adam steps and exact solves, layer after layer
 * through the already fitted ones, so a later layer makes up for an earlier one's error), on all
 * fitting images but the last SEARCH_SCORE_IMAGES (a fifth of them at most), and is scored by
 * `divergence` on those. Only the full fit ranks allocations as the run will: with the exact solves
 * alone the search preferred conv2=22,conv3=43 to equal fractions at 8× on the character CNN, and
 * after the full fit equal fractions had the lower held-out divergence. Starting from equal fractions, it moves rank between
 * layers (`moveRanks`), taking the first move that scores better (the last good one tried first)
 * and halving the step when none does, within SEARCH_EVALUATIONS fits. The held-out images are
 * never looked at. Layers the spectrum allocation leaves as they are (compress.ts, `ranksForTarget`)
 * are candidates too: the second allocation fitted leaves them so (equal fractions over the rest),
 * and the search goes on from whichever of the two scores better, moving rank among its layers.
 */
export async function planByJointSearch(
  original: tf.LayersModel, topology: ModelTopology, plan: CompressPlan, images: ImageStore, options: ReconstructOptions, target: number, reporter: Reporter,
): Promise<JointSearch> {
  const started = performance.now();
  const scoreCount = Math.max(1, Math.min(SEARCH_SCORE_IMAGES, Math.floor(images.count / 5)));
  const solve = images.head(images.count - scoreCount);
  await solve.load();
  const batches: tf.Tensor4D[] = [];
  for await (const b of images.batches(solve.count)) batches.push(b.x);
  const reference = await outputs(original, batches);
  const probabilities = endsInSoftmax(original);
  // The layers the spectrum allocation left as they are are candidates too: fitted to data, their
  // replacement may pay after all. Leaving them is one allocation the search scores.
  const schemes = selectSchemes(plan.scheme.recipe);
  const left = plan.skipped.filter((s) => s.byChoice).map((s) => plan.layers.find((l) => l.name === s.name)!);
  const candidates: Replacement[] = [...plan.ranked.map(({ info, scheme }) => ({ info, scheme })), ...left.map((info) => ({ info, scheme: schemes.of(info) }))]
    .sort((a, b) => plan.layers.indexOf(a.info) - plan.layers.indexOf(b.info));
  const targets = new Map(candidates.map((c) => [c, targetLayer(c.info, topology)]));
  const progress = reporter.phase('choosing ranks by joint fits', SEARCH_EVALUATIONS, 'fits');
  const evaluated = new Map<string, JointPoint>();
  const evaluate = async (ranks: Map<string, number>): Promise<JointPoint> => {
    const start = candidates.filter((c) => ranks.has(c.info.name)).map((c) => c.scheme.factorize(targets.get(c)!, ranks.get(c.info.name)!));
    const fit = await fitToData(original, topology, start, solve, options, silentReporter);
    const approx = await outputs(fit.model, batches);
    const point = { ranks, theoreticalSpeedup: theoreticalSpeedup(plan.layers, candidates, ranks), divergence: divergence(reference, approx, probabilities) };
    tf.dispose(approx);
    fit.model.dispose();
    evaluated.set(formatRanks(ranks), point);
    progress.update(evaluated.size);
    return point;
  };
  const equal = await evaluate(ranksForSpeedup(plan.layers, candidates, target)!.ranks);
  let best = equal;
  const kept = left.length ? ranksForSpeedup(plan.layers, candidates.filter((c) => !left.includes(c.info)), target) : null;
  if (kept) {
    const point = await evaluate(kept.ranks);
    if (point.divergence < best.divergence) best = point;
  }
  let step = FIRST_STEP;
  const active = candidates.filter((c) => best.ranks.has(c.info.name));
  const pairs = active.flatMap((pay) => active.filter((gain) => gain !== pay).map((gain) => [pay, gain]));
  let lastGood: Replacement[] | null = null;
  while (evaluated.size < SEARCH_EVALUATIONS) {
    const ordered: Replacement[][] = lastGood ? [lastGood, ...pairs.filter((p) => p !== lastGood)] : pairs;
    const steps = new Map(active.map((c) => [c, Math.max(1, Math.round(step * best.ranks.get(c.info.name)!))]));
    let improved = false;
    for (const pair of ordered) {
      const [pay, gain] = pair;
      const moved = moveRanks(plan.layers, candidates, best.ranks, gain, pay, steps.get(pay)!, target);
      if (!moved || evaluated.has(formatRanks(moved))) continue;
      if (evaluated.size >= SEARCH_EVALUATIONS) break;
      const point = await evaluate(moved);
      if (point.divergence < best.divergence) {
        [best, improved, lastGood] = [point, true, pair];
        break;
      }
    }
    if (improved) continue;
    if ([...steps.values()].every((s) => s === 1)) break;
    step /= 2;
  }
  progress.finish();
  tf.dispose([...batches, ...reference]);
  return {
    plan: {
      ...plan,
      ranked: active.map(({ info, scheme }) => ({ info, scheme, rank: best.ranks.get(info.name)!, slower: false })),
      skipped: plan.skipped.filter((s) => !best.ranks.has(s.name)).map((s) => (s.byChoice ? { ...s, reason: leftByChoice(target, 'output divergence in joint fits') } : s)),
      allocation: { ranks: best.ranks, theoreticalSpeedup: best.theoreticalSpeedup, predictedError: best.divergence, target, baselineError: equal.divergence, basis: 'measured' },
    },
    chosen: best,
    equal,
    evaluated: [...evaluated.values()],
    images: { solve: solve.count, score: reference.reduce((s, y) => s + y.shape[0], 0) },
    seconds: (performance.now() - started) / 1000,
  };
}
