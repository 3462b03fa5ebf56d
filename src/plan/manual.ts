/**
 * Ranks as the user gives them (`--rank 8` or `--rank conv2=8,conv3=12`), parsed, and checked
 * against each chosen layer's full and break-even rank before any work.
 */
import { convGeometry, layerMacs } from '../model/cost.js';
import { UserError } from '../errors.js';
import type { LayerInfo } from '../model/layers.js';
import { breakEvenRank, type Scheme } from '../schemes/index.js';
import type { RankedLayer } from './ranks.js';

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

