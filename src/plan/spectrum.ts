/**
 * Ranks for a speedup target by MACs from the kernels' filter spectra (`compress --speedup X`
 * without data): the allocation of ranks.ts over every chosen layer's filter-error curve.
 */
import type { LayerInfo } from '../model/layers.js';
import type { ModelTopology } from '../model/topology.js';
import { UserError } from '../errors.js';
import type { Scheme } from '../schemes/index.js';
import type { CompressPlan } from './plan.js';
import { allocateRanks, belowFloor, equalFractionError, filterCandidates, maximumSpeedup, rankCap, type RankedLayer } from './ranks.js';
import { leftByChoice } from './select.js';
import { silentReporter, type Reporter } from '../report/progress.js';

/** Stage 2 for a speedup target: the ranks with the least summed predicted filter error. */
export function spectrumRanks(
  layers: LayerInfo[], chosen: LayerInfo[], schemeOf: (layer: LayerInfo) => Scheme, target: number, topology: ModelTopology, reporter: Reporter = silentReporter,
): { ranked: RankedLayer[]; skipped: CompressPlan['skipped']; allocation: CompressPlan['allocation'] & {} } {
  const candidates = filterCandidates(chosen, schemeOf, topology, reporter);
  const allocation = allocateRanks(layers, candidates, target);
  if (!allocation) {
    const max = maximumSpeedup(layers, candidates);
    throw new UserError(`--speedup ${target}: these layers can make the model at most ${max.speedup.toFixed(2)}× faster by MACs (${max.heldBack}); ask for less, or select more layers with --layers`);
  }
  const ranked = chosen.filter((l) => allocation.ranks.has(l.name)).map((info) => ({ info, scheme: schemeOf(info), rank: allocation.ranks.get(info.name)!, slower: false }));
  const skipped = candidates.filter((c) => !allocation.ranks.has(c.info.name)).map((c) => ({ name: c.info.name, ...(rankCap(c) < 1 ? { reason: belowFloor(c) } : { reason: leftByChoice(target, 'predicted filter error'), byChoice: true as const }) }));
  return { ranked, skipped, allocation: { ...allocation, target, baselineError: equalFractionError(layers, candidates, target), basis: 'spectrum' } };
}
