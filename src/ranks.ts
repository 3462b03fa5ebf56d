/** Rank selection: the ranks that reach a theoretical whole-model speedup, from the cost model. */
import { convGeometry, layerMacs } from './cost.js';
import type { LayerInfo } from './model/layers.js';
import type { Scheme } from './schemes.js';

export interface RankChoice {
  ranks: Map<string, number>;
  /** Whole-model MACs before / after at these ranks. */
  theoreticalSpeedup: number;
}

/** Whole-model speedup when each layer in `ranks` is replaced by `scheme` at its rank. */
export function theoreticalSpeedup(layers: LayerInfo[], scheme: Scheme, ranks: Map<string, number>): number {
  let before = 0;
  let after = 0;
  for (const layer of layers) {
    const macs = layerMacs(layer) ?? 0;
    before += macs;
    const rank = ranks.get(layer.name);
    after += rank === undefined ? macs : scheme.macs(convGeometry(layer), rank);
  }
  return before / after;
}

/**
 * The largest ranks, each the same fraction of its layer's full rank but never above its
 * break-even rank (a layer is not made dearer to make another cheaper), whose whole-model speedup
 * is at least `target`; null if even rank 1 everywhere falls short.
 */
export function ranksForSpeedup(layers: LayerInfo[], names: string[], scheme: Scheme, target: number): RankChoice | null {
  const chosen = names.map((n) => layers.find((l) => l.name === n)!);
  const at = (fraction: number) =>
    new Map(chosen.map((l) => {
      const g = convGeometry(l);
      return [l.name, Math.max(1, Math.min(scheme.breakEvenRank(g), Math.floor(fraction * scheme.fullRank(g))))];
    }));
  if (theoreticalSpeedup(layers, scheme, at(0)) < target) return null;
  let lo = 0;
  let hi = 1;
  for (let i = 0; i < 40; i++) {
    const mid = (lo + hi) / 2;
    if (theoreticalSpeedup(layers, scheme, at(mid)) >= target) lo = mid;
    else hi = mid;
  }
  const ranks = at(lo);
  return { ranks, theoreticalSpeedup: theoreticalSpeedup(layers, scheme, ranks) };
}

export function formatRanks(ranks: Map<string, number>): string {
  return [...ranks].map(([n, r]) => `${n}=${r}`).join(',');
}
