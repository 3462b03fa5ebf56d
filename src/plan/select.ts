/**
 * Stage 1 of compress: which layers to replace. Named layers must exist and be replaceable; without
 * names, each scheme's default rule picks them. Also the notes on layers left as they are.
 */
import { convGeometry, layerMacs, type ConvGeometry } from '../model/cost.js';
import { UserError } from '../errors.js';
import type { LayerInfo } from '../model/layers.js';
import { breakEvenRank, type Scheme, type SchemeSelection } from '../schemes/index.js';
import type { RankSpec } from './manual.js';

/** A chosen layer left as it is, and why; `byChoice` when an allocation found that replacing it does not pay. */
export interface SkippedLayer {
  name: string;
  reason: string;
  byChoice?: true;
}

/** The skipped layers as lines, one per reason ("left a, b as they are: why"); a warning unless left by choice. */
export function skippedNotes(skipped: SkippedLayer[]): string[] {
  const byReason = new Map<string, SkippedLayer[]>();
  for (const s of skipped) byReason.set(s.reason, [...(byReason.get(s.reason) ?? []), s]);
  return [...byReason].map(([reason, group]) => {
    const names = group.length === 1 ? `${group[0].name} as it is` : `${group.length} layers as they are (${group.map((g) => g.name).join(', ')})`;
    return `${group[0].byChoice ? '' : 'warning: '}left ${names}: ${reason}`;
  });
}

/** Why `layer` cannot be replaced by `scheme`, or null. */
function refusal(layer: LayerInfo, scheme: Scheme): string | null {
  if (layer.calls.length !== 1) return `it is shared (called ${layer.calls.length} times); lowrank replaces layers that are called once`;
  return scheme.refuses(layer);
}

/** Why a run without --layers passes over a candidate at the single rank `rank`, or null. */
function rankMisfit(layer: LayerInfo, scheme: Scheme, rank: number, allowSlower: boolean): string | null {
  let g: ConvGeometry;
  try {
    g = convGeometry(layer);
  } catch (e) {
    // E.g. a Dense layer on variable-length input: not a default candidate, not an error.
    if (e instanceof UserError) return e.message;
    throw e;
  }
  const full = scheme.fullRank(g);
  if (rank > full) return `rank ${rank} is above its full rank ${full}`;
  if (!allowSlower && scheme.macs(g, rank) >= (layerMacs(layer) ?? 0)) return `rank ${rank} saves no MACs there (break-even ${breakEvenRank(scheme, g)})`;
  return null;
}

/**
 * Stage 1: the layers to replace, in model order. Named layers must exist and be replaceable. By
 * default: the layers each scheme's default rule picks (src/schemes/index.ts: every Conv2D larger
 * than 1×1 except the first conv; every 1×1 Conv2D and Dense layer except the last layer), passing
 * over those where a single --rank is above full rank or saves no MACs.
 */
export function selectLayers(
  layers: LayerInfo[], schemes: SchemeSelection, names: string[] | undefined, rank: RankSpec | undefined, allowSlower = false,
  flag = '--layers',
): { chosen: LayerInfo[]; defaulted: string | null } {
  const eligible = () => layers.filter((l) => layerMacs(l) && refusal(l, schemes.of(l)) === null).map((l) => l.name).join(', ') || 'none';
  if (!names) {
    const rules = new Set<string>();
    const allRules = new Set<string>();
    const candidates = layers.filter((l) => {
      const d = schemes.defaultRule(l, layers);
      if (d) allRules.add(d.rule);
      if (d?.picked) rules.add(d.rule);
      return d?.picked ?? false;
    });
    const why = (l: LayerInfo) => refusal(l, schemes.of(l)) ?? (typeof rank === 'number' ? rankMisfit(l, schemes.of(l), rank, allowSlower) : null);
    const chosen = candidates.filter((l) => why(l) === null);
    const passed = candidates.filter((l) => !chosen.includes(l)).map((l) => `${l.name} (${why(l)})`);
    const passedNote = passed.length ? `; passed over ${passed.join(', ')}` : '';
    if (chosen.length === 0) {
      throw new UserError(`no layer to replace by default (${[...allRules].join('; ') || 'no Conv2D or Dense layer'})${passedNote}; name layers with --layers (eligible: ${eligible()})`);
    }
    const defaulted = `no --layers given: replacing ${chosen.map((l) => l.name).join(', ')} (${[...rules].join('; ')})${passedNote}`;
    return { chosen, defaulted };
  }
  if (names.length === 0) throw new UserError(`--layers names no layer; give comma-separated layer names (eligible: ${eligible()})`);
  const chosen: LayerInfo[] = [];
  for (const name of names) {
    const layer = layers.find((l) => l.name === name);
    if (!layer) throw new UserError(`${flag}: no layer named '${name}'; eligible: ${eligible()}`);
    const why = refusal(layer, schemes.of(layer));
    if (why) throw new UserError(`${flag}: cannot replace ${name}: ${why} (eligible: ${eligible()})`);
    if (chosen.includes(layer)) throw new UserError(`--layers names ${name} twice; name each layer once`);
    chosen.push(layer);
  }
  // Model order: data reconstruction walks the layers front to back.
  chosen.sort((a, b) => layers.indexOf(a) - layers.indexOf(b));
  return { chosen, defaulted: null };
}

/** Why an allocation left a layer as it is that it could have replaced. */
export const leftByChoice = (target: number, currency: string) =>
  `replacing does not pay: ${target}× is reached with less ${currency} by leaving it (its saving costs more error per MAC saved than the other layers')`;
