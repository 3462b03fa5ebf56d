/**
 * A compression plan, the hand-off between the stages of compress:
 *
 *   select layers (select.ts) → choose ranks (choose.ts) → factorize → (fit to data, src/reconstruct) → build → save
 *
 * `CompressPlan` is what the first two stages decide; `factorize` turns each ranked layer into its
 * scheme's filter-reconstruction factors. src/commands/compress.ts runs the whole command.
 */
import { convGeometry } from '../model/cost.js';
import type { LayerInfo } from '../model/layers.js';
import type { ModelTopology } from '../model/topology.js';
import type { Log } from '../report/progress.js';
import { targetLayer, type Factorization, type Scheme, type SchemeOptions } from '../schemes/index.js';
import type { RankSpec } from './manual.js';
import type { Allocation, RankedLayer } from './ranks.js';
import type { SkippedLayer } from './select.js';

export interface CompressOptions extends SchemeOptions {
  /** The user's ranks; or, with `speedup`, none: ranks are chosen for the target. */
  rank?: RankSpec;
  /** Whole-model theoretical speedup to reach with the least predicted error (see spectrum.ts). */
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

/** What a speedup allocation was chosen from: kernel spectra, response spectra on the fitting images, or fits measured on them. */
export type AllocationBasis = 'spectrum' | 'responses' | 'measured';

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
  allocation: (Allocation & { target: number; baselineError: number | null; basis: AllocationBasis }) | null;
}

/** The plan's rank per replaced layer. */
export const planRanks = (plan: CompressPlan) => new Map(plan.ranked.map((r) => [r.info.name, r.rank]));

/** Stage 3: each ranked layer's filter-reconstruction factors. */
export function factorize(plan: CompressPlan, topology: ModelTopology, log: Log = () => {}): Factorization[] {
  return plan.ranked.map(({ info, scheme, rank }) => {
    log(`factorizing ${info.name} (${scheme.label}, rank ${rank} of ${scheme.fullRank(convGeometry(info))})`);
    return scheme.factorize(targetLayer(info, topology), rank);
  });
}
