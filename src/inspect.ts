/** The per-layer cost report behind `lowrank inspect`. */
import { convGeometry, layerMacs, modelMacs } from './cost.js';
import { energyRank, scheme2Matrix } from './factorize/reshape.js';
import { spectrum } from './linalg/svd.js';
import type { LayerInfo, Shape } from './model/layers.js';
import { selectLayers } from './compress.js';
import { allocateRanks, filterCandidates, maximumSpeedup, ranksForSpeedup } from './ranks.js';
import { breakEvenRank, scheme2 } from './schemes/index.js';

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
}

export interface InspectReport {
  totalMacs: number;
  totalParams: number;
  unknownLayers: string[];
  layers: LayerReport[];
}

const CONV_CLASSES = new Set(['Conv2D', 'DepthwiseConv2D', 'SeparableConv2D', 'Conv2DTranspose', 'Conv1D', 'Conv3D']);

const lastDim = (s: Shape | undefined): number | null => (s ? (s[s.length - 1] ?? null) : null);

/** Whether Scheme 2 applies: a 2-D convolution with a kernel larger than 1×1. */
export function isFactorizableConv(layer: LayerInfo): boolean {
  if (layer.className !== 'Conv2D') return false;
  const k = layer.config.kernelSize as number[];
  return k[0] * k[1] > 1;
}

export async function scheme2Summary(layer: LayerInfo): Promise<Scheme2Summary> {
  const g = convGeometry(layer);
  const kernel = layer.layer.getWeights()[0].dataSync() as Float32Array;
  const dims = { kh: g.kh, kw: g.kw, C: g.C, N: g.N };
  const sigma2 = spectrum(scheme2Matrix(kernel, dims), g.C * g.kh, g.kw * g.N);
  const energyRanks = Object.fromEntries(ENERGY_FRACTIONS.map((f) => [f, energyRank(sigma2, Number(f))])) as Scheme2Summary['energyRanks'];
  return { fullRank: scheme2.fullRank(g), breakEvenRank: breakEvenRank(scheme2, g), energyRanks };
}

export async function inspectLayers(layers: LayerInfo[], withSpectra = true): Promise<InspectReport> {
  const macs = layers.map(layerMacs);
  const { total: totalMacs, unknown } = modelMacs(layers);
  const reports: LayerReport[] = [];
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
      scheme2: withSpectra && isFactorizableConv(layer) ? await scheme2Summary(layer) : null,
    });
  }
  return {
    totalMacs,
    totalParams: layers.reduce((a, l) => a + l.params, 0),
    unknownLayers: unknown,
    layers: reports,
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
 * "How fast can this get?": the maximum theoretical speedup of the default selection of Scheme 2
 * layers, what holds it back, and the ranks reaching a few whole-model targets — more useful than
 * energy ranks, which often lie above break-even.
 */
export function speedupReach(layers: LayerInfo[], topology: any, withSpectra = true): SpeedupReach | null {
  let chosen: LayerInfo[];
  try {
    chosen = selectLayers(layers, scheme2, undefined).chosen;
  } catch {
    return null; // no layer to replace: the layer table says why
  }
  const candidates = withSpectra
    ? filterCandidates(layers, chosen.map((l) => l.name), scheme2, topology)
    : chosen.map((info) => ({ info, scheme: scheme2, error: new Float64Array(scheme2.fullRank(convGeometry(info)) + 1) }));
  const max = maximumSpeedup(layers, candidates);
  const targets = REACH_TARGETS.filter((t) => t <= max.speedup).map((target) => {
    const a = withSpectra ? allocateRanks(layers, candidates, target)! : ranksForSpeedup(layers, candidates, target)!;
    return { target, ranks: Object.fromEntries(a.ranks), theoreticalSpeedup: a.theoreticalSpeedup };
  });
  return { layers: chosen.map((l) => l.name), maxSpeedup: max.speedup, heldBack: max.heldBack, targets };
}
