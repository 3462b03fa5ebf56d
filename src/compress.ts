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
import { convGeometry, layerMacs, modelMacs } from './cost.js';
import { UserError } from './errors.js';
import { modelTopology } from './model/io.js';
import { listLayers, type LayerInfo } from './model/layers.js';
import {
  allocateRanks, filterCandidates, manualRanks, maximumSpeedup, ranksForSpeedup, type Allocation, type RankedLayer,
} from './ranks.js';
import { buildRewrittenModel, rewriteTopology } from './rewrite.js';
import {
  filterError, schemeFor, targetLayer, type Factorization, type NewLayer, type Scheme, type SchemeOptions,
} from './schemes/index.js';

export { parseRankSpec, type RankSpec } from './ranks.js';
import type { RankSpec } from './ranks.js';

export interface CompressOptions extends SchemeOptions {
  /** The user's ranks; or, with `speedup`, none: ranks are chosen for the target. */
  rank?: RankSpec;
  /** Whole-model theoretical speedup to reach with the least predicted error (see ranks.ts). */
  speedup?: number;
  /** Layer names; default: every Conv2D larger than 1×1 except the first conv. */
  layers?: string[];
  /** Replace layers even where the rank saves no MACs. */
  allowSlower?: boolean;
}

export interface CompressPlan {
  scheme: Scheme;
  /** Every layer of the model, in model order. */
  layers: LayerInfo[];
  ranked: RankedLayer[];
  skipped: { name: string; reason: string }[];
  /** Said when the layers were chosen by default. */
  defaulted: string | null;
  /** With a speedup target: the chosen ranks, and the equal-fraction baseline's predicted error. */
  allocation: (Allocation & { target: number; baselineError: number | null; basis: 'spectrum' | 'measured' }) | null;
}

const isConv2D = (l: LayerInfo) => l.className === 'Conv2D';
const kernelArea = (l: LayerInfo) => {
  const k = l.config.kernelSize as number[];
  return k[0] * k[1];
};

/** Why `layer` cannot be replaced by `scheme`, or null. */
function refusal(layer: LayerInfo, scheme: Scheme): string | null {
  if (layer.calls.length !== 1) return `it is shared (called ${layer.calls.length} times); lowrank replaces layers that are called once`;
  return scheme.refuses(layer);
}

/**
 * Stage 1: the layers to replace, in model order. Named layers must exist and be replaceable; by
 * default every replaceable Conv2D larger than 1×1 except the first conv (it works on raw pixels).
 */
export function selectLayers(layers: LayerInfo[], scheme: Scheme, names: string[] | undefined): { chosen: LayerInfo[]; defaulted: string | null } {
  const convs = layers.filter(isConv2D);
  const eligible = () => convs.filter((l) => refusal(l, scheme) === null).map((l) => l.name).join(', ') || 'none';
  if (!names) {
    const first = convs[0];
    const candidates = convs.filter((l) => l !== first && kernelArea(l) > 1);
    const chosen = candidates.filter((l) => refusal(l, scheme) === null);
    const passed = candidates.filter((l) => !chosen.includes(l)).map((l) => `${l.name} (${refusal(l, scheme)})`);
    if (chosen.length === 0) {
      throw new UserError(`no replaceable Conv2D layer larger than 1×1 besides the first conv${passed.length ? `; passed over ${passed.join(', ')}` : ''}; name layers with --layers (eligible: ${eligible()})`);
    }
    const defaulted = `no --layers given: replacing ${chosen.map((l) => l.name).join(', ')} (every Conv2D larger than 1×1 except the first conv layer${first ? `, ${first.name}, which works on raw pixels` : ''})${passed.length ? `; passed over ${passed.join(', ')}` : ''}`;
    return { chosen, defaulted };
  }
  if (names.length === 0) throw new UserError(`--layers names no layer; give comma-separated layer names (eligible: ${eligible()})`);
  const chosen: LayerInfo[] = [];
  for (const name of names) {
    const layer = layers.find((l) => l.name === name);
    if (!layer) throw new UserError(`--layers: no layer named '${name}'; eligible: ${eligible()}`);
    const why = refusal(layer, scheme);
    if (why) throw new UserError(`--layers: cannot replace ${name}: ${why} (eligible: ${eligible()})`);
    if (chosen.includes(layer)) throw new UserError(`--layers names ${name} twice; name each layer once`);
    chosen.push(layer);
  }
  // Model order: data reconstruction walks the layers front to back.
  chosen.sort((a, b) => layers.indexOf(a) - layers.indexOf(b));
  return { chosen, defaulted: null };
}

/** Stage 2 for a speedup target: the ranks with the least summed predicted filter error. */
function ranksForTarget(
  layers: LayerInfo[], chosen: LayerInfo[], scheme: Scheme, target: number, topology: any,
): { ranked: RankedLayer[]; skipped: CompressPlan['skipped']; allocation: CompressPlan['allocation'] & {} } {
  const candidates = filterCandidates(layers, chosen.map((l) => l.name), scheme, topology);
  const allocation = allocateRanks(layers, candidates, target);
  if (!allocation) {
    const max = maximumSpeedup(layers, candidates);
    throw new UserError(`--speedup ${target}: these layers can make the model at most ${max.speedup.toFixed(2)}× faster by MACs (${max.heldBack}); ask for less, or select more layers with --layers`);
  }
  const ranked = chosen.filter((l) => allocation.ranks.has(l.name)).map((info) => ({ info, rank: allocation.ranks.get(info.name)!, slower: false }));
  const skipped = chosen.filter((l) => !allocation.ranks.has(l.name)).map((l) => ({ name: l.name, reason: `no rank of ${scheme.label} saves MACs on this layer` }));
  const baseline = ranksForSpeedup(layers, candidates, target);
  return { ranked, skipped, allocation: { ...allocation, target, baselineError: baseline?.predictedError ?? null, basis: 'spectrum' } };
}

/** Stages 1 and 2, with every check that does not need the factors. */
export function planCompression(model: tf.LayersModel, options: CompressOptions, topology: any): CompressPlan {
  const scheme = schemeFor(options);
  const layers = listLayers(model);
  if ((options.rank === undefined) === (options.speedup === undefined)) {
    throw new UserError('give either --rank (your ranks) or --speedup (ranks chosen for a target), not both and not neither');
  }
  // With per-layer ranks and no --layers, the ranks name the layers.
  const names = options.layers ?? (options.rank instanceof Map ? [...options.rank.keys()] : undefined);
  const { chosen, defaulted } = selectLayers(layers, scheme, names);
  if (options.speedup !== undefined) {
    return { scheme, layers, defaulted, ...ranksForTarget(layers, chosen, scheme, options.speedup, topology) };
  }
  const { ranked, skipped } = manualRanks(chosen, scheme, options.rank!, options.allowSlower ?? false);
  if (ranked.length === 0) {
    throw new UserError(`nothing to replace: ${skipped.map((s) => `${s.name}: ${s.reason}`).join('; ')}`);
  }
  return { scheme, layers, ranked, skipped, defaulted, allocation: null };
}

export type Progress = (message: string) => void;

/** Stage 3: each ranked layer's filter-reconstruction factors. */
export function factorize(plan: CompressPlan, topology: any, log: Progress = () => {}): Factorization[] {
  return plan.ranked.map(({ info, rank }) => {
    log(`factorizing ${info.name} (${plan.scheme.label}, rank ${rank} of ${plan.scheme.fullRank(convGeometry(info))})`);
    return plan.scheme.factorize(targetLayer(info, topology), rank);
  });
}

/** The new layers of every factorization, by the name of the layer they replace. */
export function replacementLayers(factorizations: Factorization[]): Map<string, NewLayer[]> {
  return new Map(factorizations.map((f) => [f.target.name, f.scheme.layers(f)]));
}

/** Stage 5: the rewritten topology and the stock tfjs model it describes. */
export async function buildCompressed(original: tf.LayersModel, topology: any, factorizations: Factorization[]): Promise<{ model: tf.LayersModel; topology: any }> {
  const replacements = replacementLayers(factorizations);
  const rewritten = rewriteTopology(topology, replacements);
  return { model: await buildRewrittenModel(original, rewritten, replacements), topology: rewritten };
}

export interface LayerResult {
  name: string;
  scheme: string;
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
  topology: any;
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
export async function compressModel(model: tf.LayersModel, options: CompressOptions & { topology?: any }, log: Progress = () => {}): Promise<CompressResult> {
  const topology = options.topology ?? modelTopology(model);
  const plan = planCompression(model, options, topology);
  if (plan.defaulted) log(plan.defaulted);
  const factorizations = factorize(plan, topology, log);
  const built = await buildCompressed(model, topology, factorizations);
  const layers = layerResults(plan, factorizations);
  return { ...built, plan, factorizations, layers, ...modelCost(plan, layers) };
}
