/**
 * `compress` without the CLI: choose the layers and ranks, factorize each, rewrite the graph and
 * build the compressed model in tfjs.
 */
import * as tf from '@tensorflow/tfjs';
import { conv2dMacs, convGeometry, layerMacs, type Basis } from './cost.js';
import { UserError } from './errors.js';
import { modelTopology } from './model/io.js';
import { listLayers, type LayerInfo } from './model/layers.js';
import { buildRewrittenModel, rewriteTopology, topologyLayers } from './rewrite.js';
import { schemeFor, type ConvLayer, type NewLayer, type Replacement, type Scheme } from './schemes.js';

/** One rank for every layer, or a rank per layer name. */
export type RankSpec = number | Map<string, number>;

export interface CompressOptions {
  scheme: 1 | 2;
  rank: RankSpec;
  /** Layer names; default: every Conv2D larger than 1×1 except the first conv. */
  layers?: string[];
  basis?: Basis;
  separable?: boolean;
  /** Replace layers even where the rank saves no MACs. */
  force?: boolean;
  /** The model's saved topology (a loaded model's own); default: the model's toJSON(). */
  topology?: any;
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
  iterations?: number;
}

export interface CompressResult {
  model: tf.LayersModel;
  /** The rewritten topology to save with `model`. */
  topology: any;
  scheme: Scheme;
  totalMacsBefore: number;
  totalMacsAfter: number;
  theoreticalSpeedup: number;
  layers: LayerResult[];
  skipped: { name: string; reason: string }[];
  /** The chosen conv layers of the original model, in model order (for data reconstruction). */
  targets: { info: LayerInfo; conv: ConvLayer; rank: number; replacement: Replacement }[];
}

/** Parses "8" or "conv2=8,conv3=12". */
export function parseRankSpec(text: string): RankSpec {
  const bad = () => new UserError(`--rank '${text}': give a whole number (e.g. 8) or name=rank pairs (e.g. conv2=8,conv3=12)`);
  if (/^\d+$/.test(text.trim())) return Number(text);
  const map = new Map<string, number>();
  for (const part of text.split(',')) {
    const m = /^\s*([^=\s]+)\s*=\s*(\d+)\s*$/.exec(part);
    if (!m) throw bad();
    map.set(m[1], Number(m[2]));
  }
  if (map.size === 0) throw bad();
  return map;
}

const isConv2D = (l: LayerInfo) => l.className === 'Conv2D';
const kernelArea = (l: LayerInfo) => {
  const k = l.config.kernelSize as number[];
  return k[0] * k[1];
};

/** The layers to replace, checked: names exist and are Conv2D layers called once. */
export function chooseLayers(layers: LayerInfo[], options: CompressOptions): { chosen: LayerInfo[]; defaulted: string | null } {
  const convs = layers.filter(isConv2D);
  const eligible = () => convs.map((l) => l.name).join(', ') || 'none';
  let names = options.layers;
  if (!names && options.rank instanceof Map) names = [...options.rank.keys()];
  let defaulted: string | null = null;
  if (!names || names.length === 0) {
    const candidates = convs.filter((l) => kernelArea(l) > 1);
    const first = convs[0];
    const chosen = candidates.filter((l) => l !== first);
    if (chosen.length === 0) throw new UserError(`no Conv2D layer larger than 1×1 besides the first conv; name layers with --layers (eligible: ${eligible()})`);
    defaulted = `no --layers given: replacing ${chosen.map((l) => l.name).join(', ')} (every Conv2D larger than 1×1 except the first conv layer${first ? `, ${first.name}, which works on raw pixels` : ''})`;
    return { chosen, defaulted };
  }
  const chosen: LayerInfo[] = [];
  for (const name of names) {
    const layer = layers.find((l) => l.name === name);
    if (!layer) throw new UserError(`--layers: no layer named '${name}'; eligible Conv2D layers: ${eligible()}`);
    if (!isConv2D(layer)) throw new UserError(`--layers: ${name} is a ${layer.className}, not a Conv2D; eligible Conv2D layers: ${eligible()}`);
    if (layer.calls.length !== 1) throw new UserError(`--layers: ${name} is shared (called ${layer.calls.length} times); lowrank replaces layers that are called once`);
    if (!chosen.includes(layer)) chosen.push(layer);
  }
  // Keep model order: data reconstruction walks the layers front to back.
  chosen.sort((a, b) => layers.indexOf(a) - layers.indexOf(b));
  return { chosen, defaulted };
}

function rankFor(spec: RankSpec, name: string): number {
  if (typeof spec === 'number') return spec;
  const r = spec.get(name);
  if (r === undefined) throw new UserError(`--rank gives no rank for ${name}; add ${name}=<rank>`);
  return r;
}

/** The saved (snake_case) config of layer `name` in a topology. */
function savedConfig(topology: any, name: string): Record<string, any> {
  const found = topologyLayers(topology).find((l) => l.config?.name === name);
  if (!found) throw new Error(`layer ${name} missing from the saved topology`);
  return found.config;
}

export function convLayer(info: LayerInfo, topology: any): ConvLayer {
  const weights = info.layer.getWeights();
  return {
    name: info.name,
    config: savedConfig(topology, info.name),
    geometry: convGeometry(info),
    kernel: weights[0].dataSync() as Float32Array,
    bias: weights.length > 1 ? (weights[1].dataSync() as Float32Array) : null,
  };
}

export interface Progress {
  (message: string): void;
}

export async function compressModel(model: tf.LayersModel, options: CompressOptions, log: Progress = () => {}): Promise<CompressResult> {
  const scheme = schemeFor({ scheme: options.scheme, basis: options.basis ?? 'per-channel', separable: options.separable ?? false });
  const layers = listLayers(model);
  const { chosen, defaulted } = chooseLayers(layers, options);
  if (defaulted) log(defaulted);
  const topology = options.topology ?? modelTopology(model);

  const totalMacsBefore = layers.reduce((a, l) => a + (layerMacs(l) ?? 0), 0);
  const replacements = new Map<string, NewLayer[]>();
  const results: LayerResult[] = [];
  const skipped: { name: string; reason: string }[] = [];
  const targets: CompressResult['targets'] = [];
  let saved = 0;
  for (const info of chosen) {
    const g = convGeometry(info);
    const rank = rankFor(options.rank, info.name);
    const full = scheme.fullRank(g);
    if (!Number.isInteger(rank) || rank < 1 || rank > full) {
      throw new UserError(`--rank ${rank} for ${info.name}: ${scheme.label} needs a rank from 1 to ${full} (full rank) for this layer`);
    }
    const before = conv2dMacs(g);
    const after = scheme.macs(g, rank);
    if (after >= before && !options.force) {
      skipped.push({ name: info.name, reason: `rank ${rank} saves no MACs (${after} ≥ ${before}; largest saving rank ${scheme.breakEvenRank(g)}); pass --force to replace it anyway` });
      continue;
    }
    log(`factorizing ${info.name} (${scheme.label}, rank ${rank} of ${full})`);
    const conv = convLayer(info, topology);
    const replacement = await scheme.replace(conv, rank);
    replacements.set(info.name, replacement.layers);
    targets.push({ info, conv, rank, replacement });
    saved += before - after;
    results.push({
      name: info.name,
      scheme: scheme.id,
      rank,
      fullRank: full,
      macsBefore: before,
      macsAfter: after,
      paramsBefore: info.params,
      paramsAfter: scheme.params(g, rank),
      filterError: replacement.filterError,
      newLayers: replacement.layers.map((l) => l.config.name),
      ...(replacement.iterations !== undefined ? { iterations: replacement.iterations } : {}),
    });
  }
  if (replacements.size === 0) {
    throw new UserError(`nothing to replace: ${skipped.map((s) => `${s.name}: ${s.reason}`).join('; ')}`);
  }
  const newTopology = rewriteTopology(topology, replacements);
  const compressed = await buildRewrittenModel(model, newTopology, replacements);
  const totalMacsAfter = totalMacsBefore - saved;
  return {
    model: compressed,
    topology: newTopology,
    scheme,
    totalMacsBefore,
    totalMacsAfter,
    theoreticalSpeedup: totalMacsBefore / totalMacsAfter,
    layers: results,
    skipped,
    targets,
  };
}
