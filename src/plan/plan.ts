/**
 * Compression as one pipeline of stages with typed hand-offs:
 *
 *   select layers → choose ranks → factorize → (fit to data, src/reconstruct) → build → save
 *
 * `planCompression` runs the first two and checks everything a user can get wrong before any slow
 * work; `factorize` turns each ranked layer into its scheme's filter-reconstruction factors;
 * `buildCompressed` rewrites the saved topology and builds the stock tfjs model from a list of
 * factorizations (filter-only or data-fitted alike). `compressModel` chains them for callers that
 * hold a model in memory; `runCompress` (src/run-compress.ts) is the whole command.
 */
import * as tf from '@tensorflow/tfjs';
import { convGeometry, layerMacs, modelMacs, type ConvGeometry } from '../model/cost.js';
import { UserError } from '../errors.js';
import { modelTopology } from '../model/io.js';
import { listLayers, type LayerInfo } from '../model/layers.js';
import {
  allocateRanks, belowFloor, equalFractionError, filterCandidates, manualRanks, maximumSpeedup, rankCap, type Allocation, type RankedLayer,
} from './ranks.js';
import { buildRewrittenModel, rewriteTopology } from '../model/rewrite.js';
import {
  breakEvenRank, filterError, selectSchemes, targetLayer, type Factorization, type NewLayer, type Scheme, type SchemeOptions, type SchemeSelection,
} from '../schemes/index.js';

export { parseRankSpec, type RankSpec } from './ranks.js';
import type { RankSpec } from './ranks.js';
import type { ModelTopology } from '../model/topology.js';

export interface CompressOptions extends SchemeOptions {
  /** The user's ranks; or, with `speedup`, none: ranks are chosen for the target. */
  rank?: RankSpec;
  /** Whole-model theoretical speedup to reach with the least predicted error (see ranks.ts). */
  speedup?: number;
  /** With `speedup`: the target is measured time on the current backend, not MACs (see measured.ts). */
  measured?: boolean;
  /** Instead of `rank` or `speedup`: the fastest model whose held-out loss is at most this many points (see maxloss.ts). */
  maxLoss?: number;
  /** Layer names; default: see `selectLayers`. */
  layers?: string[];
  /** Replace layers even where the rank saves no MACs. */
  allowSlower?: boolean;
}

export interface CompressPlan {
  /** The scheme --scheme names (layers it is not made for may get another; see `ranked`). */
  scheme: Scheme;
  /** Every layer of the model, in model order. */
  layers: LayerInfo[];
  ranked: RankedLayer[];
  skipped: SkippedLayer[];
  /** Said when the layers were chosen by default. */
  defaulted: string | null;
  /** With a speedup target: the chosen ranks, and the equal-fraction baseline's predicted error. */
  allocation: (Allocation & { target: number; baselineError: number | null; basis: 'spectrum' | 'measured' }) | null;
}

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

/** Stage 2 for a speedup target: the ranks with the least summed predicted filter error. */
function ranksForTarget(
  layers: LayerInfo[], chosen: LayerInfo[], schemeOf: (layer: LayerInfo) => Scheme, target: number, topology: ModelTopology,
): { ranked: RankedLayer[]; skipped: CompressPlan['skipped']; allocation: CompressPlan['allocation'] & {} } {
  const candidates = filterCandidates(chosen, schemeOf, topology);
  const allocation = allocateRanks(layers, candidates, target);
  if (!allocation) {
    const max = maximumSpeedup(layers, candidates);
    throw new UserError(`--speedup ${target}: these layers can make the model at most ${max.speedup.toFixed(2)}× faster by MACs (${max.heldBack}); ask for less, or select more layers with --layers`);
  }
  const ranked = chosen.filter((l) => allocation.ranks.has(l.name)).map((info) => ({ info, scheme: schemeOf(info), rank: allocation.ranks.get(info.name)!, slower: false }));
  const skipped = candidates.filter((c) => !allocation.ranks.has(c.info.name)).map((c) => ({ name: c.info.name, ...(rankCap(c) < 1 ? { reason: belowFloor(c) } : { reason: leftByChoice(target, 'predicted filter error'), byChoice: true as const }) }));
  return { ranked, skipped, allocation: { ...allocation, target, baselineError: equalFractionError(layers, candidates, target), basis: 'spectrum' } };
}

/** Why an allocation left a layer as it is that it could have replaced. */
export const leftByChoice = (target: number, currency: string) =>
  `replacing does not pay: ${target}× is reached with less ${currency} by leaving it (its saving costs more error per MAC saved than the other layers')`;

/**
 * Stage 2 for the searches that choose ranks themselves (--max-loss, --speedup --measured): every
 * layer at rank 1, the fastest the plan can be by MACs; layers where no rank saves the floor
 * (MIN_LAYER_SAVING of their MACs) are left out.
 */
function fastestRanks(chosen: LayerInfo[], schemeOf: (layer: LayerInfo) => Scheme): Pick<CompressPlan, 'ranked' | 'skipped' | 'allocation'> {
  const saves = (info: LayerInfo) => rankCap({ info, scheme: schemeOf(info) }) >= 1;
  const skipped = chosen.filter((l) => !saves(l)).map((info) => ({ name: info.name, reason: belowFloor({ info, scheme: schemeOf(info) }) }));
  if (skipped.length === chosen.length) {
    throw new UserError(`nothing to replace: ${skipped.map((s) => `${s.name}: ${s.reason}`).join('; ')}; select other layers with --layers`);
  }
  const ranked = chosen.filter(saves).map((info) => ({ info, scheme: schemeOf(info), rank: 1, slower: false }));
  return { ranked, skipped, allocation: null };
}

/** Stages 1 and 2, with every check that does not need the factors. */
export function planCompression(model: tf.LayersModel, options: CompressOptions, topology: ModelTopology): CompressPlan {
  const schemes = selectSchemes(options);
  const layers = listLayers(model);
  // The command line's combinations of --rank, --speedup, --measured and --max-loss are checked with
  // the other flag rules (src/cli/rules.ts); a caller of this function must choose one way.
  const ways = [options.rank, options.speedup, options.maxLoss].filter((x) => x !== undefined).length;
  if (ways !== 1 || (options.measured && options.speedup === undefined)) throw new Error('planCompression: give one of rank, speedup (optionally measured) or maxLoss');
  // With per-layer ranks and no --layers, the ranks name the layers.
  const names = options.layers ?? (options.rank instanceof Map ? [...options.rank.keys()] : undefined);
  const { chosen, defaulted } = selectLayers(layers, schemes, names, options.rank, options.allowSlower ?? false, options.layers ? '--layers' : '--rank');
  if (options.maxLoss !== undefined || options.measured) {
    return { scheme: schemes.chosen, layers, defaulted, ...fastestRanks(chosen, schemes.of) };
  }
  if (options.speedup !== undefined) {
    return { scheme: schemes.chosen, layers, defaulted, ...ranksForTarget(layers, chosen, schemes.of, options.speedup, topology) };
  }
  const { ranked, skipped } = manualRanks(chosen, schemes.of, options.rank!, options.allowSlower ?? false);
  if (ranked.length === 0) {
    throw new UserError(`nothing to replace: ${skipped.map((s) => `${s.name}: ${s.reason}`).join('; ')}`);
  }
  return { scheme: schemes.chosen, layers, ranked, skipped, defaulted, allocation: null };
}

/** The plan's rank per replaced layer. */
export const planRanks = (plan: CompressPlan) => new Map(plan.ranked.map((r) => [r.info.name, r.rank]));

export type Progress = (message: string) => void;

/** Stage 3: each ranked layer's filter-reconstruction factors. */
export function factorize(plan: CompressPlan, topology: ModelTopology, log: Progress = () => {}): Factorization[] {
  return plan.ranked.map(({ info, scheme, rank }) => {
    log(`factorizing ${info.name} (${scheme.label}, rank ${rank} of ${scheme.fullRank(convGeometry(info))})`);
    return scheme.factorize(targetLayer(info, topology), rank);
  });
}

/** The new layers of every factorization, by the name of the layer they replace. */
export function replacementLayers(factorizations: Factorization[]): Map<string, NewLayer[]> {
  return new Map(factorizations.map((f) => [f.target.name, f.scheme.layers(f)]));
}

/** Stage 5: the rewritten topology and the stock tfjs model it describes. */
export async function buildCompressed(original: tf.LayersModel, topology: ModelTopology, factorizations: Factorization[]): Promise<{ model: tf.LayersModel; topology: ModelTopology }> {
  const replacements = replacementLayers(factorizations);
  const rewritten = rewriteTopology(topology, replacements);
  return { model: await buildRewrittenModel(original, rewritten, replacements), topology: rewritten };
}

export interface LayerResult {
  name: string;
  scheme: string;
  /** The scheme's human description. */
  label: string;
  rank: number;
  fullRank: number;
  macsBefore: number;
  macsAfter: number;
  paramsBefore: number;
  paramsAfter: number;
  filterError: number;
  newLayers: string[];
  /** Alternating-least-squares sweeps (Scheme 1 separable). */
  iterations?: number;
}

/** The per-layer report of factorizations (of the original layers in `layers`). */
export function layerResults(plan: CompressPlan, factorizations: Factorization[]): LayerResult[] {
  return factorizations.map((f) => {
    const info = plan.layers.find((l) => l.name === f.target.name)!;
    const g = f.target.geometry;
    return {
      name: f.target.name,
      scheme: f.scheme.id,
      label: f.scheme.label,
      rank: f.rank,
      fullRank: f.scheme.fullRank(g),
      macsBefore: layerMacs(info) ?? 0,
      macsAfter: f.scheme.macs(g, f.rank),
      paramsBefore: info.params,
      paramsAfter: f.scheme.params(g, f.rank),
      filterError: filterError(f),
      newLayers: f.scheme.layers(f).map((l) => l.config.name),
      ...(f.sweeps !== undefined ? { iterations: f.sweeps } : {}),
    };
  });
}

/** Whole-model MACs before and after replacing the layers of `results`. */
export function modelCost(plan: CompressPlan, results: LayerResult[]): { totalMacsBefore: number; totalMacsAfter: number; theoreticalSpeedup: number } {
  const totalMacsBefore = modelMacs(plan.layers).total;
  const totalMacsAfter = totalMacsBefore - results.reduce((s, l) => s + l.macsBefore - l.macsAfter, 0);
  return { totalMacsBefore, totalMacsAfter, theoreticalSpeedup: totalMacsBefore / totalMacsAfter };
}

/** A rank this small keeps too little of a layer to work without data reconstruction. */
export const TINY_RANK = 2;
/** …or this small a share of the layer's full rank. */
export const TINY_RANK_SHARE = 0.05;
/** Replaced layers' filter error, weighted by the MACs they had, above which the model is badly damaged. */
export const LARGE_FILTER_ERROR = 0.3;
/** Held-out top-1 agreement with the original below which the report ends on a warning. */
export const LOW_AGREEMENT = 0.9;

/**
 * Warnings on the damage the chosen ranks do: tiny ranks, and a large filter error over the whole
 * allocation. Without data reconstruction they say it is needed; with it, the held-out check
 * (`heldOutWarning`) says whether it was enough.
 */
export function damageWarnings(results: LayerResult[], withData: boolean): string[] {
  const out: string[] = [];
  const tiny = results.filter((l) => l.rank <= TINY_RANK || l.rank < TINY_RANK_SHARE * l.fullRank);
  const remedy = withData
    ? 'data reconstruction has to make up for a lot: check the held-out agreement below'
    : 'at this speedup data reconstruction is needed: give --data <image-folder>, or ask for less';
  if (tiny.length) {
    const shown = tiny.map((l) => `${l.name} ${l.rank}/${l.fullRank}`);
    out.push(`${tiny.length} layer${tiny.length > 1 ? 's' : ''} at a tiny rank (≤ ${TINY_RANK}, or under ${100 * TINY_RANK_SHARE} % of full rank): ${shown.slice(0, 12).join(', ')}${shown.length > 12 ? `, and ${shown.length - 12} more` : ''}; ${remedy}`);
  }
  const macs = results.reduce((s, l) => s + l.macsBefore, 0);
  const error = results.reduce((s, l) => s + l.filterError * l.macsBefore, 0) / Math.max(macs, 1);
  if (error >= LARGE_FILTER_ERROR) {
    out.push(`the replaced layers lose ${(100 * error).toFixed(0)} % of their filters on average (filter error weighted by MACs; ${100 * LARGE_FILTER_ERROR} % or more damages a model badly); ${remedy}`);
  }
  return out;
}

/** A plain warning when the data-reconstructed model agrees with the original on under LOW_AGREEMENT of the held-out images; else null. */
export function heldOutWarning(agreement: number, holdout: number, accuracy: { original: number; data: number } | null): string | null {
  if (agreement >= LOW_AGREEMENT) return null;
  const acc = accuracy ? `; top-1 accuracy ${(100 * accuracy.original).toFixed(1)} % → ${(100 * accuracy.data).toFixed(1)} %` : '';
  return `the compressed model agrees with the original's top-1 on only ${(100 * agreement).toFixed(1)} % of ${holdout} held-out images${acc}: it is not a faithful copy at this speedup; ask for less, or give more fitting images`;
}

/** The record of what replaced what, kept in the output's userDefinedMetadata.lowrank.replaced. */
export interface ReplacementRecord {
  layer: string;
  scheme: string;
  label: string;
  rank: number;
  layers: string[];
}

/** What replaced what, from a model.json's userDefinedMetadata (null for models written elsewhere). */
export function readReplacementRecords(metadata: any): Map<string, string[]> | null {
  const replaced = metadata?.lowrank?.replaced;
  if (!Array.isArray(replaced)) return null;
  const ok = (r: any) => r && typeof r.layer === 'string' && Array.isArray(r.layers) && r.layers.every((n: unknown) => typeof n === 'string');
  return new Map(replaced.filter(ok).map((r: ReplacementRecord) => [r.layer, r.layers]));
}

export function replacementRecords(factorizations: Factorization[]): ReplacementRecord[] {
  return factorizations.map((f) => ({
    layer: f.target.name, scheme: f.scheme.id, label: f.scheme.label, rank: f.rank, layers: f.scheme.layers(f).map((l) => l.config.name),
  }));
}

/**
 * The input's userDefinedMetadata with this run's records added under lowrank.replaced (records
 * of an earlier lowrank run on the input are kept: its replacement layers may be replaced again).
 */
export function withReplacementRecords(metadata: Record<string, any> | undefined, factorizations: Factorization[]): Record<string, any> {
  const previous = Array.isArray(metadata?.lowrank?.replaced) ? metadata!.lowrank.replaced : [];
  return { ...(metadata ?? {}), lowrank: { ...(metadata?.lowrank ?? {}), replaced: [...previous, ...replacementRecords(factorizations)] } };
}

export interface CompressResult {
  model: tf.LayersModel;
  /** The rewritten topology to save with `model`. */
  topology: ModelTopology;
  plan: CompressPlan;
  factorizations: Factorization[];
  layers: LayerResult[];
  totalMacsBefore: number;
  totalMacsAfter: number;
  theoreticalSpeedup: number;
}

/**
 * Filter-reconstruction compression of an in-memory model: plan, factorize, build.
 * `topology` is the model's saved topology (a loaded model's own); default: its toJSON().
 */
export async function compressModel(model: tf.LayersModel, options: CompressOptions & { topology?: ModelTopology }, log: Progress = () => {}): Promise<CompressResult> {
  const topology = options.topology ?? modelTopology(model);
  const plan = planCompression(model, options, topology);
  if (plan.defaulted) log(plan.defaulted);
  const factorizations = factorize(plan, topology, log);
  const built = await buildCompressed(model, topology, factorizations);
  const layers = layerResults(plan, factorizations);
  return { ...built, plan, factorizations, layers, ...modelCost(plan, layers) };
}
