/**
 * Stage 2 of compress, choosing ranks: the one place that decides which allocator runs.
 *
 * `planCompression` selects the layers (select.ts) and gives them their starting ranks before any
 * slow work: the user's (manual.ts), the spectrum allocation for a speedup target (spectrum.ts), or
 * rank 1 everywhere for the searches that choose ranks themselves (fastest.ts). `chooseRanks` then
 * settles the ranks once images are loaded and layers timed: the bisection of --max-loss
 * (maxloss.ts), the measured-time allocation of --measured (measured.ts), or the joint fits of
 * --speedup with --data (joint-search.ts), or the response spectra of --speedup with --data when
 * that search is not affordable (responses.ts); otherwise the starting ranks stand.
 */
import type * as tf from '@tensorflow/tfjs';
import { UserError } from '../errors.js';
import { listLayers } from '../model/layers.js';
import type { ModelSource, ModelTopology } from '../model/topology.js';
import { silentReporter, type Log, type Reporter } from '../report/progress.js';
import { selectSchemes } from '../schemes/index.js';
import { fastestRanks } from './fastest.js';
import { planByJointSearch } from './joint-search.js';
import { manualRanks } from './manual.js';
import { searchMaxLoss, type MaxLossSearch } from './maxloss.js';
import { planByMeasuredTime, spectrumCandidates, type MeasuredChoice, type TimeTable } from './measured.js';
import { planRanks, type CompressOptions, type CompressPlan } from './plan.js';
import { formatRanks } from './ranks.js';
import { selectLayers } from './select.js';
import { RESPONSE_IMAGES, planByResponses, responseCandidates, responseSpectraApply } from './responses.js';
import { measureSensitivity, sensitivityCandidates } from './sensitivity.js';
import { spectrumRanks } from './spectrum.js';
import type { DataContext } from '../data/plan.js';
import type { ImageStore } from '../data/store.js';
import type { SearchMode } from '../reconstruct/budget.js';

/** Stages 1 and 2 up to the starting ranks, with every check that does not need the factors. */
export function planCompression(model: tf.LayersModel, options: CompressOptions, topology: ModelTopology, reporter: Reporter = silentReporter): CompressPlan {
  const schemes = selectSchemes(options);
  const layers = listLayers(model);
  // The command line's combinations of --rank, --speedup, --measured and --max-loss are checked with
  // the other flag rules (src/cli/rules.ts); a caller of this function must choose one way.
  const ways = [options.rank, options.speedup, options.maxLoss].filter((x) => x !== undefined).length;
  if (ways !== 1 || (options.measured && options.speedup === undefined)) throw new Error('planCompression: give one of rank, speedup (optionally measured) or maxLoss');
  // With per-layer ranks and no --layers, the ranks name the layers.
  const names = options.layers ?? (options.rank instanceof Map ? [...options.rank.keys()] : undefined);
  const { chosen, defaulted } = selectLayers(layers, schemes, names, options.rank, options.allowSlower ?? false, options.layers ? '--layers' : '--rank');
  if (options.maxLoss !== undefined || options.measured) {
    return { scheme: schemes.chosen, layers, defaulted, ...fastestRanks(chosen, schemes.of) };
  }
  if (options.speedup !== undefined) {
    return { scheme: schemes.chosen, layers, defaulted, ...spectrumRanks(layers, chosen, schemes.of, options.speedup, topology, reporter) };
  }
  const { ranked, skipped } = manualRanks(chosen, schemes.of, options.rank!, options.allowSlower ?? false);
  if (ranked.length === 0) {
    throw new UserError(`nothing to replace: ${skipped.map((s) => `${s.name}: ${s.reason}`).join('; ')}`);
  }
  return { scheme: schemes.chosen, layers, ranked, skipped, defaulted, allocation: null };
}

/** What the rank searches may use, gathered by the compress command before they run. */
export interface RankContext {
  source: ModelSource;
  /** With --data: the loaded images; null without. */
  data: DataContext | null;
  /** With --measured: the layers' time table (measured before the images are loaded, so a target out of reach fails fast). */
  table: TimeTable | null;
  /** With --speedup and --data: how the joint search runs when it is affordable, else null (reconstruct/budget.ts). */
  jointSearch: SearchMode | null;
  /** With --max-loss: speedup targets the search may try, and whether held-out accuracy may be used. */
  probes: number;
  labelled: boolean;
  log: Log;
  reporter: Reporter;
}

/** The settled ranks, with what the search that chose them reports. */
export interface RankDecision {
  plan: CompressPlan;
  /** With --max-loss: the search, with the chosen probe's fitted model. */
  maxLoss: MaxLossSearch | null;
  /** With --measured: the time allocation and its prediction. */
  measured: MeasuredChoice | null;
}

/** `base` with ranks for `target`× from the layers' response spectra on the fitting images, said in the log. */
async function planFromResponses(base: CompressPlan, target: number, fit: ImageStore, { source, log, reporter }: RankContext): Promise<CompressPlan> {
  const images = Math.min(RESPONSE_IMAGES, fit.count);
  const plan = planByResponses(base, await responseCandidates(source, base, fit, reporter), target, images);
  log(`ranks for ≥ ${target}× from the layers' response spectra on ${images} fitting images: ${formatRanks(planRanks(plan))}`);
  return plan;
}

/** Stage 2 settled: `base` (from `planCompression`) re-chosen by the search `options` ask for, or as it is. */
export async function chooseRanks(base: CompressPlan, options: CompressOptions, ctx: RankContext): Promise<RankDecision> {
  const { source, data, table, log } = ctx;
  if (options.maxLoss !== undefined) {
    if (!data) throw new Error('chooseRanks: --max-loss needs the images');
    const searched = await searchMaxLoss({ source, base, data, limit: options.maxLoss, probes: ctx.probes, labelled: ctx.labelled, log });
    const c = searched.report.chosen;
    log(`chose ${c.target}× (${formatRanks(planRanks(searched.plan))}, ${c.theoreticalSpeedup.toFixed(2)}× by MACs): loses ${c.loss.toFixed(2)} points of ${searched.report.measure}, within ${options.maxLoss}`);
    return { plan: searched.plan, maxLoss: searched, measured: null };
  }
  if (table) {
    const target = options.speedup!;
    const candidates = data
      ? sensitivityCandidates(base, await measureSensitivity(source, base, data.stores.fit, ctx.reporter))
      : spectrumCandidates(base, source.topology, ctx.reporter);
    const measured = planByMeasuredTime(base, table, candidates, target);
    log(`ranks for ≥ ${target}× in measured time at batch ${table.batch}: ${formatRanks(planRanks(measured.plan))}, predicted ${measured.predictedSpeedup.toFixed(2)}×`);
    return { plan: measured.plan, maxLoss: null, measured };
  }
  if (options.speedup !== undefined && data && ctx.jointSearch) {
    // Comparing allocations, the spectra's is the response spectra's when they apply.
    const spectral = ctx.jointSearch === 'compare' && responseSpectraApply(base) ? await planFromResponses(base, options.speedup, data.stores.fit, ctx) : base;
    const search = await planByJointSearch(source, spectral, data.stores.fit, data.options, options.speedup, ctx.jointSearch, ctx.reporter);
    const which = ctx.jointSearch === 'compare' ? `, ${search.chosen.allocation} the closest to the original` : '';
    log(`ranks for ≥ ${options.speedup}× chosen by joint fits of ${search.evaluated.length} allocations${which}: ${formatRanks(search.chosen.ranks)} (equal fractions: ${formatRanks(search.equal.ranks)})`);
    return { plan: search.plan, maxLoss: null, measured: null };
  }
  if (options.speedup !== undefined && data && responseSpectraApply(base)) {
    return { plan: await planFromResponses(base, options.speedup, data.stores.fit, ctx), maxLoss: null, measured: null };
  }
  return { plan: base, maxLoss: null, measured: null };
}
