/**
 * Rank selection, the pipeline's second stage: the rank of every chosen layer, either as the user
 * gave it (`--rank 8` or `--rank conv2=8,conv3=12`, checked against each layer's full and
 * break-even rank before any work) or for a theoretical whole-model speedup.
 */
import { convGeometry, layerMacs } from './cost.js';
import { UserError } from './errors.js';
import type { LayerInfo } from './model/layers.js';
import { breakEvenRank, type Scheme } from './schemes/index.js';

/** One rank for every layer, or a rank per layer name. */
export type RankSpec = number | Map<string, number>;

/** Parses "8" or "conv2=8,conv3=12". */
export function parseRankSpec(text: string): RankSpec {
  const bad = () => new UserError(`--rank '${text}': give a whole number (e.g. 8) or name=rank pairs (e.g. conv2=8,conv3=12)`);
  if (/^\s*\d+\s*$/.test(text)) return Number(text);
  const map = new Map<string, number>();
  for (const part of text.split(',')) {
    const m = /^\s*([^=\s]+)\s*=\s*(\d+)\s*$/.exec(part);
    if (!m) throw bad();
    if (map.has(m[1])) throw new UserError(`--rank '${text}': ${m[1]} is given twice; give each layer one rank`);
    map.set(m[1], Number(m[2]));
  }
  if (map.size === 0) throw bad();
  return map;
}

export interface RankedLayer {
  info: LayerInfo;
  /** The scheme that replaces the layer. */
  scheme: Scheme;
  rank: number;
  /** True when the rank costs at least as many MACs as the layer (only kept with allowSlower). */
  slower: boolean;
}

export interface ManualRanks {
  ranked: RankedLayer[];
  /** Layers left as they are because their rank saves no MACs. */
  skipped: { name: string; reason: string }[];
}

/**
 * The user's ranks for the chosen layers, every one checked: an entry for each layer, none for a
 * layer that is not chosen, each within 1…full rank. A rank that saves no MACs leaves its layer
 * as it is unless `allowSlower`.
 */
export function manualRanks(chosen: LayerInfo[], schemeOf: (layer: LayerInfo) => Scheme, spec: RankSpec, allowSlower: boolean): ManualRanks {
  if (spec instanceof Map) {
    const names = new Set(chosen.map((l) => l.name));
    const extra = [...spec.keys()].filter((n) => !names.has(n));
    if (extra.length) {
      throw new UserError(`--rank names ${extra.join(', ')}, which --layers does not select (selected: ${[...names].join(', ')}); drop the entry or add the layer to --layers`);
    }
  }
  const ranked: RankedLayer[] = [];
  const skipped: ManualRanks['skipped'] = [];
  for (const info of chosen) {
    const rank = typeof spec === 'number' ? spec : spec.get(info.name);
    if (rank === undefined) throw new UserError(`--rank gives no rank for ${info.name}; add ${info.name}=<rank>`);
    const scheme = schemeOf(info);
    const g = convGeometry(info);
    const full = scheme.fullRank(g);
    if (!Number.isInteger(rank) || rank < 1 || rank > full) {
      throw new UserError(`--rank ${rank} for ${info.name}: ${scheme.label} needs a rank from 1 to ${full} (full rank) for this layer`);
    }
    const before = layerMacs(info) ?? 0;
    const after = scheme.macs(g, rank);
    const slower = after >= before;
    if (slower && !allowSlower) {
      skipped.push({
        name: info.name,
        reason: `rank ${rank} saves no MACs (${after} ≥ ${before}; largest saving rank ${breakEvenRank(scheme, g)}); pass --allow-slower to replace it anyway`,
      });
      continue;
    }
    ranked.push({ info, scheme, rank, slower });
  }
  return { ranked, skipped };
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

export interface RankChoice {
  ranks: Map<string, number>;
  /** Whole-model MACs before / after at these ranks. */
  theoreticalSpeedup: number;
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
      return [l.name, Math.max(1, Math.min(breakEvenRank(scheme, g), Math.floor(fraction * scheme.fullRank(g))))];
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
