/**
 * What a compression did, layer by layer and for the whole model (MACs, parameters, filter error),
 * and the warnings on the damage its ranks do.
 */
import { layerMacs, modelMacs } from '../model/cost.js';
import type { LayerInfo } from '../model/layers.js';
import { filterError, type Factorization } from '../schemes/index.js';

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
  /** Alternating-least-squares sweeps, for schemes that iterate. */
  iterations?: number;
}

/** The per-layer report of factorizations (of the original layers in `layers`). */
export function layerResults(plan: { layers: LayerInfo[] }, factorizations: Factorization[]): LayerResult[] {
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
export function modelCost(plan: { layers: LayerInfo[] }, results: LayerResult[]): { totalMacsBefore: number; totalMacsAfter: number; theoreticalSpeedup: number } {
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

/**
 * A plain warning when the data-reconstructed model agrees with the original on under LOW_AGREEMENT
 * of the held-out images, or when the original gives one class to so many of them that agreeing
 * says little (`commonest`, its share); else null.
 */
export function heldOutWarning(agreement: number, holdout: number, accuracy: { original: number; data: number } | null, commonest = 0): string | null {
  if (agreement >= LOW_AGREEMENT) {
    if (commonest < LOW_AGREEMENT) return null;
    return `the original gives one class to ${(100 * commonest).toFixed(1)} % of the ${holdout} held-out images, so the ${(100 * agreement).toFixed(1)} % agreement says little about the other classes; hold out images of every class (--eval-data)`;
  }
  const acc = accuracy ? `; top-1 accuracy ${(100 * accuracy.original).toFixed(1)} % → ${(100 * accuracy.data).toFixed(1)} %` : '';
  return `the compressed model agrees with the original's top-1 on only ${(100 * agreement).toFixed(1)} % of ${holdout} held-out images${acc}: it is not a faithful copy at this speedup; ask for less, or give more fitting images`;
}
