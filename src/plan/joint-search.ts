/**
 * `compress --speedup X --data …`: ranks chosen by fitting whole allocations at the target jointly,
 * as the run will fit them, each scored on fitting images the fit did not see (never the held-out
 * ones); rank moves between layers while the score improves. Layers interact under the joint fit (a
 * later layer corrects an earlier one's error), which no per-layer measurement (sensitivity.ts) sees.
 */
import * as tf from '@tensorflow/tfjs';
import { performance } from 'node:perf_hooks';
import type { ImageStore } from '../data/store.js';
import type { LayerInfo } from '../model/layers.js';
import type { ModelSource } from '../model/topology.js';
import { fitToData, type ReconstructOptions } from '../reconstruct/index.js';
import { SEARCH_FITS, type SearchMode } from '../reconstruct/budget.js';
import { withinPhase, type Reporter } from '../report/progress.js';
import { targetLayer } from '../schemes/index.js';
import { planRanks, type CompressPlan } from './plan.js';
import { formatRanks, rankCap, ranksForSpeedup, theoreticalSpeedup, type Replacement } from './ranks.js';
import { leftByChoice } from './select.js';
import { outputs } from './sensitivity.js';
import { allocationCandidates, leftByChoiceLayers } from './responses.js';

/**
 * Fitting images set aside to score each allocation of the joint search on; it is fitted on all the
 * others. Moving rank between few layers, it keeps back a fifth: the fit needs the rest, as a layer
 * whose output is one position (the character CNN's conv3) gets one equation per image, so a fit on
 * fewer images favours low ranks there that the real fit on all of them would not. Comparing whole
 * allocations of many layers, it keeps back half: on Teachable Machine's MobileNetV2 0.35 the mean
 * KL divergence on 32 photos picked the allocation better on 1,000 others three times in four, on
 * 80 photos five times in six.
 */
export const SEARCH_SCORE_IMAGES = 200;

export function searchScoreImages(fit: number, mode: SearchMode): number {
  return Math.max(1, Math.min(SEARCH_SCORE_IMAGES, Math.floor(fit / (mode === 'compare' ? 2 : 5))));
}
/** A move's first step, as a fraction of the rank of the layer that pays; halved when no move helps. */
const FIRST_STEP = 1 / 8;

/** One allocation as the joint search measured it. */
export interface JointPoint {
  /** Which allocation it is. */
  allocation: 'equal fractions' | 'the spectra\'s' | 'equal fractions over the layers the spectra keep' | 'a move of rank';
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
 * fitting images but the last `searchScoreImages`, and is scored by
 * `divergence` on those. Only the full fit ranks allocations as the run will: with the exact solves
 * alone the search preferred conv2=22,conv3=43 to equal fractions at 8× on the character CNN, and
 * after the full fit equal fractions had the lower held-out divergence. Starting from equal fractions, it moves rank between
 * layers (`moveRanks`), taking the first move that scores better (the last good one tried first)
 * and halving the step when none does, within SEARCH_FITS fits. The held-out images are
 * never looked at. Layers the spectrum allocation leaves as they are (spectrum.ts)
 * are candidates too: the second allocation fitted leaves them so (equal fractions over the rest),
 * and the search goes on from whichever of the two scores better, moving rank among its layers.
 *
 * With many layers (`mode` 'compare', budget.ts) there are no moves: it fits equal fractions,
 * `plan`'s own ranks (the spectra's allocation) and equal fractions over the layers those keep, and
 * keeps the closest. Measured on Teachable Machine's MobileNetV2 0.35 at 2× (31 layers), equal
 * fractions agreed with the original on 88.0 % of 1,000 other photos, the response spectra's
 * allocation on 85.1 %: no per-layer error predicts how 31 jointly fitted layers add up.
 */
export async function planByJointSearch(
  source: ModelSource, plan: CompressPlan, images: ImageStore, options: ReconstructOptions, target: number, mode: SearchMode, reporter: Reporter,
): Promise<JointSearch> {
  const started = performance.now();
  const scoreCount = searchScoreImages(images.count, mode);
  const solve = images.head(images.count - scoreCount);
  await solve.load();
  const batches: tf.Tensor4D[] = [];
  for await (const b of images.batches(solve.count)) batches.push(b.x);
  const reference = await outputs(source.model, batches);
  const probabilities = endsInSoftmax(source.model);
  // The layers the spectrum allocation left as they are are candidates too: fitted to data, their
  // replacement may pay after all. Leaving them is one allocation the search scores.
  const candidates = allocationCandidates(plan);
  const left = leftByChoiceLayers(plan);
  const targets = new Map(candidates.map((c) => [c, targetLayer(c.info, source.topology)]));
  const fits = SEARCH_FITS[mode];
  const progress = reporter.phase('choosing ranks by joint fits', fits, 'fits');
  const evaluated = new Map<string, JointPoint>();
  const evaluate = async (ranks: Map<string, number>, allocation: JointPoint['allocation']): Promise<JointPoint> => {
    const start = candidates.filter((c) => ranks.has(c.info.name)).map((c) => c.scheme.factorize(targets.get(c)!, ranks.get(c.info.name)!));
    const fit = await fitToData(source, start, solve, options, withinPhase(progress, evaluated.size, `fit ${evaluated.size + 1}: `));
    const approx = await outputs(fit.model, batches);
    const point = { allocation, ranks, theoreticalSpeedup: theoreticalSpeedup(plan.layers, candidates, ranks), divergence: divergence(reference, approx, probabilities) };
    tf.dispose(approx);
    fit.model.dispose();
    evaluated.set(formatRanks(ranks), point);
    progress.update(evaluated.size);
    return point;
  };
  const equal = await evaluate(ranksForSpeedup(plan.layers, candidates, target)!.ranks, 'equal fractions');
  let best = equal;
  const spectral = planRanks(plan);
  if (mode === 'compare' && !evaluated.has(formatRanks(spectral))) {
    const point = await evaluate(spectral, 'the spectra\'s');
    if (point.divergence < best.divergence) best = point;
  }
  const kept = left.length ? ranksForSpeedup(plan.layers, candidates.filter((c) => !left.includes(c.info)), target) : null;
  if (kept && !evaluated.has(formatRanks(kept.ranks))) {
    const point = await evaluate(kept.ranks, 'equal fractions over the layers the spectra keep');
    if (point.divergence < best.divergence) best = point;
  }
  let step = FIRST_STEP;
  const active = candidates.filter((c) => best.ranks.has(c.info.name));
  const pairs = active.flatMap((pay) => active.filter((gain) => gain !== pay).map((gain) => [pay, gain]));
  let lastGood: Replacement[] | null = null;
  while (mode === 'moves' && evaluated.size < fits) {
    const ordered: Replacement[][] = lastGood ? [lastGood, ...pairs.filter((p) => p !== lastGood)] : pairs;
    const steps = new Map(active.map((c) => [c, Math.max(1, Math.round(step * best.ranks.get(c.info.name)!))]));
    let improved = false;
    for (const pair of ordered) {
      const [pay, gain] = pair;
      const moved = moveRanks(plan.layers, candidates, best.ranks, gain, pay, steps.get(pay)!, target);
      if (!moved || evaluated.has(formatRanks(moved))) continue;
      if (evaluated.size >= fits) break;
      const point = await evaluate(moved, 'a move of rank');
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
