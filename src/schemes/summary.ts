/**
 * The rank summaries `lowrank inspect` lists, asked of the schemes: for each layer a scheme is made
 * for, its full and break-even ranks and the ranks keeping fractions of the kernel's energy (the
 * SVD of the (C·kh) × (kw·N) kernel matrix: Scheme 2's, and the channel scheme's at kh = kw = 1).
 * Each summary goes under a key of inspect's report (and of `inspect --json`) with a table title.
 */
import { UserError } from '../errors.js';
import { spectrum } from '../linalg/svd.js';
import { convGeometry, type ConvGeometry } from '../model/cost.js';
import { isPointwise, isSpatialConv, type LayerInfo } from '../model/layers.js';
import { channel } from './channel.js';
import { energyRank, scheme2Matrix } from './reshape.js';
import { breakEvenRank, type Scheme } from './scheme.js';
import { scheme2 } from './scheme2.js';

export const ENERGY_FRACTIONS = ['0.9', '0.95', '0.99'] as const;

export interface RankSummary {
  fullRank: number;
  breakEvenRank: number;
  energyRanks: Record<(typeof ENERGY_FRACTIONS)[number], number>;
}

/** The layer's geometry, or null when its shapes leave it undefined (e.g. a Dense layer on variable-length input). */
export function knownGeometry(layer: LayerInfo): ConvGeometry | null {
  try {
    return convGeometry(layer);
  } catch (e) {
    if (e instanceof UserError) return null;
    throw e;
  }
}

/** Every summary inspect lists, by report key: the scheme, the layers it is summarised for, and the table's title. */
export const RANK_SUMMARIES = {
  scheme2: {
    scheme: scheme2,
    title: 'Scheme 2 ranks (kh×1 then 1×kw)',
    geometry: (layer: LayerInfo): ConvGeometry | null => (isSpatialConv(layer) ? convGeometry(layer) : null),
  },
  channel: {
    scheme: channel,
    title: 'Channel scheme ranks (1×1 convs and Dense layers, C→K then K→N)',
    geometry: (layer: LayerInfo): ConvGeometry | null => (isPointwise(layer) && layer.calls.length === 1 ? knownGeometry(layer) : null),
  },
} as const;

export type RankSummaryKey = keyof typeof RANK_SUMMARIES;
export const RANK_SUMMARY_KEYS = Object.keys(RANK_SUMMARIES) as RankSummaryKey[];

/** Full and break-even ranks of `scheme` for the layer, with the ranks keeping fractions of its kernel matrix's energy. */
export async function svdRankSummary(layer: LayerInfo, scheme: Scheme, g: ConvGeometry = convGeometry(layer)): Promise<RankSummary> {
  const kernel = layer.layer.getWeights()[0].dataSync() as Float32Array;
  const dims = { kh: g.kh, kw: g.kw, C: g.C, N: g.N };
  const sigma2 = spectrum(scheme2Matrix(kernel, dims), g.C * g.kh, g.kw * g.N);
  const energyRanks = Object.fromEntries(ENERGY_FRACTIONS.map((f) => [f, energyRank(sigma2, Number(f))])) as RankSummary['energyRanks'];
  return { fullRank: scheme.fullRank(g), breakEvenRank: breakEvenRank(scheme, g), energyRanks };
}

/** The layer's summary under every key (null where no summary applies, or with `withSpectra` false). */
export async function rankSummaries(layer: LayerInfo, withSpectra: boolean): Promise<Record<RankSummaryKey, RankSummary | null>> {
  const out = {} as Record<RankSummaryKey, RankSummary | null>;
  for (const key of RANK_SUMMARY_KEYS) {
    const { scheme, geometry } = RANK_SUMMARIES[key];
    const g = withSpectra ? geometry(layer) : null;
    out[key] = g ? await svdRankSummary(layer, scheme, g) : null;
  }
  return out;
}
