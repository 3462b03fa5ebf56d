/** The per-layer cost report behind `lowrank inspect`. */
import { layerMacs, modelMacs } from '../model/cost.js';
import { CONV_CLASSES, type LayerInfo, type Shape } from '../model/layers.js';
import type * as tf from '@tensorflow/tfjs';
import { measuredReach, measureTimeTable } from '../plan/measured.js';
import { USUALLY_QUICK, silentReporter, type Reporter } from '../report/progress.js';
import { allocateRanks, filterCandidates, maximumSpeedup, ranksForSpeedup } from '../plan/ranks.js';
import { DEFAULT_SCHEME, anySchemeReplaces, selectSchemes } from '../schemes/index.js';
import { rankSummaries, type RankSummary, type RankSummaryKey } from '../schemes/summary.js';
import type { ModelTopology } from '../model/topology.js';
import { planCompression } from '../plan/choose.js';
import { selectLayers } from '../plan/select.js';

/** One layer of the model, with the rank summary of each scheme made for it (schemes/summary.ts). */
export interface LayerReport extends Record<RankSummaryKey, RankSummary | null> {
  name: string;
  className: string;
  kernelSize: number[] | null;
  inChannels: number | null;
  outChannels: number | null;
  strides: number[] | null;
  outputShape: Shape | Shape[];
  macs: number | null;
  macShare: number | null;
  params: number;
  /** Whether some scheme can replace the layer (false for e.g. DepthwiseConv2D and shared layers). */
  replaceable: boolean;
  /** Whether `compress` without --layers considers the layer (before checking the rank against it). */
  defaultCandidate: boolean;
}

export interface InspectReport {
  totalMacs: number;
  totalParams: number;
  unknownLayers: string[];
  layers: LayerReport[];
  /** Share of the MACs in layers no scheme can replace, in total and per layer class. */
  unreplaceable: { share: number; byClass: Record<string, number> };
}

const lastDim = (s: Shape | undefined): number | null => (s ? (s[s.length - 1] ?? null) : null);

export async function inspectLayers(layers: LayerInfo[], withSpectra = true, reporter: Reporter = silentReporter): Promise<InspectReport> {
  const macs = layers.map(layerMacs);
  const { total: totalMacs, unknown } = modelMacs(layers);
  const reports: LayerReport[] = [];
  const defaults = selectSchemes(DEFAULT_SCHEME);
  const progress = reporter.phase('summarising each layer\'s ranks', layers.length, 'layers', USUALLY_QUICK);
  for (let i = 0; i < layers.length; i++) {
    const layer = layers[i];
    const c = layer.config;
    const isConv = CONV_CLASSES.has(layer.className);
    const first = layer.calls[0];
    const outputShapes = (first?.outputShapes ?? []).map((s) => s.slice(1));
    reports.push({
      name: layer.name,
      className: layer.className,
      kernelSize: isConv ? (c.kernelSize as number[]) : null,
      inChannels: isConv || layer.className === 'Dense' ? lastDim(first?.inputShapes[0]) : null,
      outChannels: isConv || layer.className === 'Dense' ? lastDim(first?.outputShapes[0]) : null,
      strides: isConv ? (c.strides as number[]) : null,
      outputShape: outputShapes.length === 1 ? outputShapes[0] : outputShapes,
      macs: macs[i],
      macShare: macs[i] === null ? null : totalMacs > 0 ? macs[i]! / totalMacs : 0,
      params: layer.params,
      ...await rankSummaries(layer, withSpectra),
      replaceable: layer.calls.length === 1 && anySchemeReplaces(layer),
      defaultCandidate: defaults.defaultRule(layer, layers)?.picked ?? false,
    });
    progress.update(i + 1);
  }
  progress.finish();
  const byClass: Record<string, number> = {};
  reports.forEach((r) => {
    if (!r.replaceable && r.macShare) byClass[r.className] = (byClass[r.className] ?? 0) + r.macShare;
  });
  return {
    totalMacs,
    totalParams: layers.reduce((a, l) => a + l.params, 0),
    unknownLayers: unknown,
    layers: reports,
    unreplaceable: { share: Object.values(byClass).reduce((a, b) => a + b, 0), byClass },
  };
}


/** Whole-model targets inspect offers ranks for. */
export const REACH_TARGETS = [2, 4, 8] as const;

export interface SpeedupReach {
  /** The layers compress would replace by default. */
  layers: string[];
  /** The fastest those layers can make the model by MACs (each at rank 1). */
  maxSpeedup: number;
  /** What holds it back: the MACs left in other layers, by kind. */
  heldBack: string;
  /** Per reachable target, the ranks with the least summed filter error (equal fractions with --no-spectra). */
  targets: { target: number; ranks: Record<string, number>; theoreticalSpeedup: number }[];
}

/**
 * "How fast can this get?": the maximum theoretical speedup of the default selection (the default
 * scheme's, schemes/index.ts), what holds it back, and the ranks reaching a few whole-model targets — more useful than
 * energy ranks, which often lie above break-even.
 */
export function speedupReach(layers: LayerInfo[], topology: ModelTopology, withSpectra = true, reporter: Reporter = silentReporter): SpeedupReach | null {
  const schemes = selectSchemes(DEFAULT_SCHEME);
  let chosen: LayerInfo[];
  try {
    chosen = selectLayers(layers, schemes, undefined, undefined).chosen;
  } catch {
    return null; // no layer to replace: the layer table says why
  }
  const replacements = chosen.map((info) => ({ info, scheme: schemes.of(info) }));
  const candidates = withSpectra ? filterCandidates(chosen, schemes.of, topology, reporter) : null;
  const max = maximumSpeedup(layers, replacements);
  const targets = REACH_TARGETS.filter((t) => t <= max.speedup).map((target) => {
    const a = candidates ? allocateRanks(layers, candidates, target)! : ranksForSpeedup(layers, replacements, target)!;
    return { target, ranks: Object.fromEntries(a.ranks), theoreticalSpeedup: a.theoreticalSpeedup };
  });
  return { layers: chosen.map((l) => l.name), maxSpeedup: max.speedup, heldBack: max.heldBack, targets };
}

/** A measured reach this close to 1× means replacing layers will not make the model faster. */
export const NEAR_ONE = 1.2;

export interface TimingReach {
  backend: string;
  batch: number;
  /** The original model's time, and the time outside the layers compress would replace. */
  beforeMs: number;
  restMs: number;
  /** The most the default selection reaches by MACs, and in measured time (every layer at its fastest timed option). */
  macMaximum: number;
  measuredMaximum: number;
  heldBack: string;
  /** Per layer: its time, and its replacement's at its fastest timed rank (what replacing it can save). */
  layers: { name: string; originalMs: number; fastestMs: number; fastestRank: number }[];
  seconds: number;
}

/**
 * What replacing the default selection saves in time on the current backend: the per-layer time
 * table `compress --measured` builds (each layer's replacement timed at a few ranks inside whole
 * models, beside the original), read as the most each layer and the whole model can gain.
 */
export async function timingReach(model: tf.LayersModel, topology: ModelTopology, batch: number, reporter: Reporter): Promise<TimingReach | null> {
  let plan;
  try {
    plan = planCompression(model, { ...DEFAULT_SCHEME, speedup: 2, measured: true }, topology);
  } catch {
    return null; // nothing to replace: the layer table says why
  }
  const table = await measureTimeTable({ model, topology }, plan, batch, reporter);
  const reach = measuredReach(table);
  return {
    backend: table.backend,
    batch,
    beforeMs: table.beforeMs,
    restMs: table.restMs,
    macMaximum: maximumSpeedup(plan.layers, plan.ranked).speedup,
    measuredMaximum: reach.maximum,
    heldBack: reach.heldBack,
    layers: table.layers.map((l) => {
      const fastest = l.points.reduce((a, p) => (p.ms < a.ms ? p : a));
      return { name: l.name, originalMs: l.originalMs, fastestMs: fastest.ms, fastestRank: fastest.rank };
    }),
    seconds: table.seconds,
  };
}
