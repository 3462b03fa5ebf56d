/**
 * What rank allocation is made of: candidates with their error curves, MACs and speedup at given
 * ranks, the floor a layer's saving must clear, and the allocation itself — for a theoretical
 * whole-model speedup, the ranks with the least summed predicted error (`allocateRanks`), or equal
 * fractions of every layer's rank (`ranksForSpeedup`). Which allocator runs is decided in choose.ts.
 */
import { convGeometry, layerMacs, modelMacs } from '../model/cost.js';
import type { LayerInfo } from '../model/layers.js';
import { breakEvenRank, targetLayer, type Scheme } from '../schemes/index.js';
import type { ModelTopology } from '../model/topology.js';
import { USUALLY_QUICK, silentReporter, type Reporter } from '../report/progress.js';

export interface RankedLayer {
  info: LayerInfo;
  /** The scheme that replaces the layer. */
  scheme: Scheme;
  rank: number;
  /** True when the rank costs at least as many MACs as the layer (only kept with allowSlower). */
  slower: boolean;
}

/** A layer rank selection may choose for, with its scheme and the error each rank would cost. */
export interface Candidate {
  info: LayerInfo;
  scheme: Scheme;
  /** Predicted relative error at each rank 0…full rank (index = rank); an allocation minimises the sum of its `signalLoss`. */
  error: ArrayLike<number>;
}

/** A layer and the scheme that would replace it: all that MAC counts and rank limits need. */
export type Replacement = Pick<Candidate, 'info' | 'scheme'>;

/** Ranks per layer name and the whole-model speedup they give by MACs. */
export interface RankChoice {
  ranks: Map<string, number>;
  /** Whole-model MACs before / after at these ranks. */
  theoreticalSpeedup: number;
}

export interface Allocation extends RankChoice {
  /** Σ over the layers of the predicted error at the chosen ranks. */
  predictedError: number;
}

/** Σ of each candidate's predicted error at its rank in `ranks` (candidates not named count 0). */
export function summedError(candidates: Candidate[], ranks: Map<string, number>): number {
  return candidates.reduce((s, c) => (ranks.has(c.info.name) ? s + c.error[ranks.get(c.info.name)!] : s), 0);
}

/** The largest relative error `signalLoss` tells apart: above it a layer keeps next to nothing. */
const MAX_LOSS_ERROR = 1 - 1e-6;

/**
 * The currency allocations minimise the sum of: −log(1 − e²) for a layer at relative error e. Such
 * a layer passes on 1 − e² of its output's energy, and layers in series compound, so the sum is
 * −log of the share the whole chain keeps. Under a plain Σ e a layer at e = 0.99 costs twice one at
 * 0.5, and flat spectra (1×1 convs) made ranks like 1 of 320 look cheap; here it costs 14 times
 * as much. For small errors it is e², so balanced allocations are ranked much as before.
 */
export function signalLoss(e: number): number {
  return -Math.log(1 - Math.min(Math.max(e, 0), MAX_LOSS_ERROR) ** 2);
}

/** Σ of each candidate's `signalLoss` at its rank in `ranks` (candidates not named count 0). */
export function summedLoss(candidates: Candidate[], ranks: Map<string, number>): number {
  return candidates.reduce((s, c) => (ranks.has(c.info.name) ? s + signalLoss(c.error[ranks.get(c.info.name)!]) : s), 0);
}

/** The layers as candidates, each for its scheme, with its filter-error curve (an SVD each: seconds on a model of ~100 layers). */
export function filterCandidates(chosen: LayerInfo[], schemeOf: (layer: LayerInfo) => Scheme, topology: ModelTopology, reporter: Reporter = silentReporter): Candidate[] {
  const progress = reporter.phase('computing the layers\' filter spectra', chosen.length, 'layers', USUALLY_QUICK);
  const candidates = chosen.map((info, i) => {
    const scheme = schemeOf(info);
    const candidate = { info, scheme, error: scheme.errorCurve(targetLayer(info, topology)) };
    progress.update(i + 1);
    return candidate;
  });
  progress.finish();
  return candidates;
}


/** Whole-model MACs when each candidate named in `ranks` is replaced at its rank. */
function macsAt(layers: LayerInfo[], candidates: Replacement[], ranks: Map<string, number>): { before: number; after: number } {
  const before = modelMacs(layers).total;
  let after = before;
  for (const c of candidates) {
    const r = ranks.get(c.info.name);
    if (r !== undefined) after -= (layerMacs(c.info) ?? 0) - c.scheme.macs(convGeometry(c.info), r);
  }
  return { before, after };
}

/** Whole-model speedup at `ranks` (layers not named stay as they are). */
export function theoreticalSpeedup(layers: LayerInfo[], candidates: Replacement[], ranks: Map<string, number>): number {
  const { before, after } = macsAt(layers, candidates, ranks);
  return before / after;
}

/**
 * The least share of its own MACs a replacement chosen by lowrank must save. Below it the layer is
 * left as it is: its replacement would add a layer call and filter error for next to no saving.
 * Ranks the user gives with --rank (one for all, or per layer) are not held to it.
 */
export const MIN_LAYER_SAVING = 0.1;

/**
 * The highest rank of a candidate saving at least MIN_LAYER_SAVING of its MACs (never above its
 * full rank); 0 if none does.
 */
export function rankCap(c: Replacement): number {
  const g = convGeometry(c.info);
  const most = (1 - MIN_LAYER_SAVING) * (layerMacs(c.info) ?? 0);
  let r = Math.min(breakEvenRank(c.scheme, g), c.scheme.fullRank(g));
  while (r >= 1 && c.scheme.macs(g, r) > most) r--;
  return r;
}

/** Why a candidate with no rank under the floor (`rankCap` 0) is left as it is. */
export function belowFloor(c: Replacement): string {
  const saving = 1 - c.scheme.macs(convGeometry(c.info), 1) / (layerMacs(c.info) ?? 0);
  const pct = (f: number) => `${Math.round(100 * f)} %`;
  if (saving <= 0) return `no rank of ${c.scheme.label} saves MACs on this layer`;
  return `even rank 1 of ${c.scheme.label} saves only ${(100 * saving).toFixed(1)} % of its MACs, under the ${pct(MIN_LAYER_SAVING)} a replacement must save (give it a rank with --rank to replace it anyway)`;
}

/**
 * The fastest the candidates can make the model (every one at rank 1), and what holds it back:
 * the MACs no candidate can take away, by kind of layer.
 */
export function maximumSpeedup(layers: LayerInfo[], candidates: Replacement[]): { speedup: number; heldBack: string } {
  const usable = candidates.filter((c) => rankCap(c) >= 1);
  const ranks = new Map(usable.map((c) => [c.info.name, 1]));
  const { before, after } = macsAt(layers, candidates, ranks);
  const names = new Set(usable.map((c) => c.info.name));
  const firstConv = layers.find((l) => l.className === 'Conv2D');
  const kinds = new Map<string, number>();
  for (const l of layers) {
    const m = layerMacs(l) ?? 0;
    if (names.has(l.name) || m === 0) continue;
    const kind = l === firstConv ? 'first conv' : l.className === 'Conv2D' && (l.config.kernelSize as number[]).every((k) => k === 1) ? '1×1 Conv2D' : l.className;
    kinds.set(kind, (kinds.get(kind) ?? 0) + m);
  }
  // Kinds below 0.05 % would read "0.0 %": not what holds the model back.
  const rest = [...kinds].filter(([, m]) => (100 * m) / before >= 0.05).sort((a, b) => b[1] - a[1]).map(([k, m]) => `${k} ${((100 * m) / before).toFixed(1)} %`);
  const replaced = usable.reduce((s, c) => s + c.scheme.macs(convGeometry(c.info), 1), 0);
  const heldBack = `layers left as they are keep ${((100 * (after - replaced)) / before).toFixed(1)} % of the MACs${rest.length ? ` (${rest.join(', ')})` : ''}, and the chosen layers at rank 1 still cost ${((100 * replaced) / before).toFixed(1)} %`;
  return { speedup: before / after, heldBack };
}

/** One candidate's options for an allocation: rank 0 (left as it is) or 1…cap, MACs linear in rank. */
interface Options {
  cap: number;
  /** MACs of the original layer and of its replacement per unit of rank. */
  original: number;
  perRank: number;
  /** `signalLoss` of the candidate's predicted error at each rank. */
  error: ArrayLike<number>;
}

const macsOf = (o: Options, rank: number) => (rank === 0 ? o.original : rank * o.perRank);
const errorOf = (o: Options, rank: number) => (rank === 0 ? 0 : o.error[rank]);

/**
 * The descent with every layer replaced: each starts at its highest saving rank, then the rank step
 * that adds the least error per MAC saved is taken until `budget` is met; finally every step back
 * up that keeps the budget is restored (best error gained per MAC first).
 */
function descend(options: Options[], fixed: number, budget: number): number[] {
  const ranks = options.map((o) => o.cap);
  let after = fixed + options.reduce((s, o, i) => s + macsOf(o, ranks[i]), 0);
  const step = (i: number, r: number) => options[i].error[r - 1] - options[i].error[r];
  while (after > budget) {
    let best = -1;
    let bestCost = Infinity;
    options.forEach((o, i) => {
      if (ranks[i] <= 1) return;
      const cost = step(i, ranks[i]) / o.perRank;
      if (cost < bestCost) [best, bestCost] = [i, cost];
    });
    ranks[best]--;
    after -= options[best].perRank;
  }
  return fillUp(options, ranks, after, budget, false);
}

/**
 * With the slack left under `budget`, the move that gains the most error per MAC spent, again and
 * again: one rank more, or (when `stay`) the layer back to as it is.
 */
function fillUp(options: Options[], ranks: number[], after: number, budget: number, stay: boolean): number[] {
  for (;;) {
    let best = -1;
    let bestRank = 0;
    let bestGain = -Infinity;
    options.forEach((o, i) => {
      const r = ranks[i];
      const moves = [...(r >= 1 && r < o.cap ? [r + 1] : []), ...(stay && r >= 1 ? [0] : [])];
      for (const next of moves) {
        const spent = macsOf(o, next) - macsOf(o, r);
        if (after + spent > budget) continue;
        const gain = (errorOf(o, r) - errorOf(o, next)) / spent;
        if (gain > bestGain) [best, bestRank, bestGain] = [i, next, gain];
      }
    });
    if (best < 0) return ranks;
    after += macsOf(options[best], bestRank) - macsOf(options[best], ranks[best]);
    ranks[best] = bestRank;
  }
}

/**
 * Ranks where leaving a layer as it is counts as an option: at a price λ (error per MAC), each
 * layer takes the option with the least error + λ·MACs, so a layer is replaced only where its
 * saving pays for its error at the price that meets the budget; λ is the least that does (by
 * bisection), and the slack left is filled up as in `descend`.
 */
function withStaying(options: Options[], fixed: number, budget: number): number[] {
  const pick = (lambda: number) => options.map((o) => {
    let best = 0;
    for (let r = 1; r <= o.cap; r++) {
      if (errorOf(o, r) + lambda * macsOf(o, r) < errorOf(o, best) + lambda * macsOf(o, best)) best = r;
    }
    return best;
  });
  const total = (ranks: number[]) => fixed + options.reduce((s, o, i) => s + macsOf(o, ranks[i]), 0);
  let hi = 1e-30;
  while (total(pick(hi)) > budget && hi < 1e300) hi *= 4;
  let lo = hi / 4;
  for (let i = 0; i < 60; i++) {
    const mid = Math.sqrt(lo * hi);
    if (total(pick(mid)) > budget) lo = mid;
    else hi = mid;
  }
  const ranks = pick(hi);
  // The bisection's end may be just short of where every layer can afford rank 1.
  if (total(ranks) > budget) return ranks.map(() => 1);
  return fillUp(options, ranks, total(ranks), budget, true);
}

/**
 * Per-layer ranks reaching at least `target`× with the least summed `signalLoss` of the predicted
 * errors. Leaving a layer as it is (no error, no saving) is an option for every layer, and no layer
 * is replaced at a rank saving under MIN_LAYER_SAVING of its MACs (`rankCap`). Of three
 * allocations, the one with the smallest summed loss is returned: `withStaying` (the one that can
 * leave layers alone), `descend` (every layer replaced; it can be better when error curves are far
 * from convex) and equal fractions (`ranksForSpeedup`), so it is never worse than the baseline.
 * Layers left as they are have no entry in `ranks`. Null when even rank 1 everywhere falls short
 * (see `maximumSpeedup`).
 */
export function allocateRanks(layers: LayerInfo[], candidates: Candidate[], target: number): Allocation | null {
  const usable = candidates.filter((c) => rankCap(c) >= 1);
  const { before } = macsAt(layers, candidates, new Map());
  const budget = (before / target) * (1 + 1e-12);
  const options: Options[] = usable.map((c) => ({
    cap: rankCap(c), original: layerMacs(c.info) ?? 0, perRank: c.scheme.macs(convGeometry(c.info), 1), error: Float64Array.from(c.error, signalLoss),
  }));
  const fixed = before - options.reduce((s, o) => s + o.original, 0);
  if (fixed + options.reduce((s, o) => s + o.perRank, 0) > budget) return null;
  const toMap = (ranks: number[]) => new Map(usable.flatMap((c, i): [string, number][] => (ranks[i] > 0 ? [[c.info.name, ranks[i]]] : [])));
  const all = toMap(descend(options, fixed, budget));
  const some = toMap(withStaying(options, fixed, budget));
  // Both are greedy: on far from convex curves equal fractions can beat them, so they compete too.
  const equal = ranksForSpeedup(layers, candidates, target)?.ranks;
  const ranks = [some, ...(equal ? [equal] : [])].reduce((best, r) => (summedLoss(usable, r) < summedLoss(usable, best) - 1e-12 ? r : best), all);
  return { ranks, theoreticalSpeedup: before / macsAt(layers, candidates, ranks).after, predictedError: summedError(usable, ranks) };
}

/**
 * The largest ranks that are each the same fraction of their layer's full rank (capped at
 * `rankCap`; layers with no rank under the floor left out) and reach at least `target`×: the simple baseline allocation; null if even
 * rank 1 everywhere falls short.
 */
export function ranksForSpeedup(layers: LayerInfo[], candidates: Replacement[], target: number): RankChoice | null {
  const usable = candidates.filter((c) => rankCap(c) >= 1);
  const at = (fraction: number) =>
    new Map(usable.map((c) => [c.info.name, Math.max(1, Math.min(rankCap(c), Math.floor(fraction * c.scheme.fullRank(convGeometry(c.info)))))]));
  if (theoreticalSpeedup(layers, candidates, at(0)) < target) return null;
  let lo = 0;
  let hi = 1;
  for (let i = 0; i < 40; i++) {
    const mid = (lo + hi) / 2;
    if (theoreticalSpeedup(layers, candidates, at(mid)) >= target) lo = mid;
    else hi = mid;
  }
  const ranks = at(lo);
  return { ranks, theoreticalSpeedup: theoreticalSpeedup(layers, candidates, ranks) };
}

/** The summed predicted error of the equal-fraction ranks for `target`× (the baseline an allocation is reported beside); null when they cannot reach it. */
export function equalFractionError(layers: LayerInfo[], candidates: Candidate[], target: number): number | null {
  const equal = ranksForSpeedup(layers, candidates, target);
  return equal ? summedError(candidates, equal.ranks) : null;
}

/** "conv2=21,conv3=52", from a Map or an object's entries. */
export function formatRanks(ranks: Iterable<[string, number]>): string {
  return [...ranks].map(([n, r]) => `${n}=${r}`).join(',');
}
