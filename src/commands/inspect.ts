/** The per-layer cost report behind `lowrank inspect`. */
import { convGeometry, layerMacs, modelMacs, type ConvGeometry } from '../model/cost.js';
import { UserError } from '../errors.js';
import { energyRank, scheme2Matrix } from '../schemes/reshape.js';
import { spectrum } from '../linalg/svd.js';
import type { LayerInfo, Shape } from '../model/layers.js';
import type * as tf from '@tensorflow/tfjs';
import { measuredReach, measureTimeTable } from '../plan/measured.js';
import type { Reporter } from '../report/progress.js';
import { allocateRanks, filterCandidates, maximumSpeedup, ranksForSpeedup } from '../plan/ranks.js';
import { anySchemeReplaces, breakEvenRank, channel, scheme2, selectSchemes, type Scheme } from '../schemes/index.js';
import type { ModelTopology } from '../model/topology.js';
import { planCompression } from '../plan/choose.js';
import { selectLayers } from '../plan/select.js';

export const ENERGY_FRACTIONS = ['0.9', '0.95', '0.99'] as const;

export interface Scheme2Summary {
  fullRank: number;
  breakEvenRank: number;
  energyRanks: Record<(typeof ENERGY_FRACTIONS)[number], number>;
}

export interface LayerReport {
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
  scheme2: Scheme2Summary | null;
  /** Ranks of the channel scheme, for 1×1 convs and Dense layers. */
  channel: Scheme2Summary | null;
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

const CONV_CLASSES = new Set(['Conv2D', 'DepthwiseConv2D', 'SeparableConv2D', 'Conv2DTranspose', 'Conv1D', 'Conv3D']);

const lastDim = (s: Shape | undefined): number | null => (s ? (s[s.length - 1] ?? null) : null);

/** Whether Scheme 2 applies: a 2-D convolution with a kernel larger than 1×1. */
export function isFactorizableConv(layer: LayerInfo): boolean {
  if (layer.className !== 'Conv2D') return false;
  const k = layer.config.kernelSize as number[];
  return k[0] * k[1] > 1;
}

/** Whether the channel scheme is made for the layer: a 1×1 conv or a Dense layer. */
export function isPointwise(layer: LayerInfo): boolean {
  return channel.refuses(layer) === null;
}

/**
 * Full and break-even ranks of a scheme that truncates the SVD of the (C·kh) × (kw·N) kernel
 * matrix (scheme 2; the channel scheme at kh = kw = 1), with the ranks keeping fractions of its energy.
 */
export async function svdRankSummary(layer: LayerInfo, scheme: Scheme, g: ConvGeometry = convGeometry(layer)): Promise<Scheme2Summary> {
  const kernel = layer.layer.getWeights()[0].dataSync() as Float32Array;
  const dims = { kh: g.kh, kw: g.kw, C: g.C, N: g.N };
  const sigma2 = spectrum(scheme2Matrix(kernel, dims), g.C * g.kh, g.kw * g.N);
  const energyRanks = Object.fromEntries(ENERGY_FRACTIONS.map((f) => [f, energyRank(sigma2, Number(f))])) as Scheme2Summary['energyRanks'];
  return { fullRank: scheme.fullRank(g), breakEvenRank: breakEvenRank(scheme, g), energyRanks };
}

export const scheme2Summary = (layer: LayerInfo): Promise<Scheme2Summary> => svdRankSummary(layer, scheme2);

/** The layer's geometry, or null when its shapes leave it undefined (e.g. a Dense layer on variable-length input). */
function knownGeometry(layer: LayerInfo): ConvGeometry | null {
  try {
    return convGeometry(layer);
  } catch (e) {
    if (e instanceof UserError) return null;
    throw e;
  }
}

export async function inspectLayers(layers: LayerInfo[], withSpectra = true): Promise<InspectReport> {
  const macs = layers.map(layerMacs);
  const { total: totalMacs, unknown } = modelMacs(layers);
  const reports: LayerReport[] = [];
  const defaults = selectSchemes({ scheme: '2', basis: 'per-channel', separable: false });
  for (let i = 0; i < layers.length; i++) {
    const layer = layers[i];
    const c = layer.config;
    const isConv = CONV_CLASSES.has(layer.className);
    const first = layer.calls[0];
    const outputShapes = (first?.outputShapes ?? []).map((s) => s.slice(1));
    const pointwise = withSpectra && isPointwise(layer) && layer.calls.length === 1 ? knownGeometry(layer) : null;
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
      scheme2: withSpectra && isFactorizableConv(layer) ? await scheme2Summary(layer) : null,
      channel: pointwise ? await svdRankSummary(layer, channel, pointwise) : null,
      replaceable: layer.calls.length === 1 && anySchemeReplaces(layer),
      defaultCandidate: defaults.defaultRule(layer, layers)?.picked ?? false,
    });
  }
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
 * "How fast can this get?": the maximum theoretical speedup of the default selection (Scheme 2 for
 * spatial convs, the channel scheme for 1×1 convs and Dense layers), what holds it back, and the ranks reaching a few whole-model targets — more useful than
 * energy ranks, which often lie above break-even.
 */
export function speedupReach(layers: LayerInfo[], topology: ModelTopology, withSpectra = true): SpeedupReach | null {
  const schemes = selectSchemes({ scheme: '2', basis: 'per-channel', separable: false });
  let chosen: LayerInfo[];
  try {
    chosen = selectLayers(layers, schemes, undefined, undefined).chosen;
  } catch {
    return null; // no layer to replace: the layer table says why
  }
  const replacements = chosen.map((info) => ({ info, scheme: schemes.of(info) }));
  const candidates = withSpectra ? filterCandidates(chosen, schemes.of, topology) : null;
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
    plan = planCompression(model, { scheme: '2', basis: 'per-channel', separable: false, speedup: 2, measured: true }, topology);
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
