/**
 * The starting ranks of the searches that choose ranks themselves (--max-loss, --speedup --measured).
 */
import { UserError } from '../errors.js';
import type { LayerInfo } from '../model/layers.js';
import type { Scheme } from '../schemes/index.js';
import type { CompressPlan } from './plan.js';
import { belowFloor, rankCap } from './ranks.js';

/**
 * Stage 2 for the searches that choose ranks themselves (--max-loss, --speedup --measured): every
 * layer at rank 1, the fastest the plan can be by MACs; layers where no rank saves the floor
 * (MIN_LAYER_SAVING of their MACs) are left out.
 */
export function fastestRanks(chosen: LayerInfo[], schemeOf: (layer: LayerInfo) => Scheme): Pick<CompressPlan, 'ranked' | 'skipped' | 'allocation'> {
  const saves = (info: LayerInfo) => rankCap({ info, scheme: schemeOf(info) }) >= 1;
  const skipped = chosen.filter((l) => !saves(l)).map((info) => ({ name: info.name, reason: belowFloor({ info, scheme: schemeOf(info) }) }));
  if (skipped.length === chosen.length) {
    throw new UserError(`nothing to replace: ${skipped.map((s) => `${s.name}: ${s.reason}`).join('; ')}; select other layers with --layers`);
  }
  const ranked = chosen.filter(saves).map((info) => ({ info, scheme: schemeOf(info), rank: 1, slower: false }));
  return { ranked, skipped, allocation: null };
}
