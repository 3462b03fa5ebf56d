/**
 * `compress --speedup X --data …` on more layers than rank moves suit (one of the allocations the
 * joint search compares, joint-search.ts), or when that search is not affordable (reconstruct/
 * budget.ts): ranks from the spectra of the layers' responses on the fitting images instead of
 * their kernels'. A layer's best rank-K reconstruction of its response reaches the
 * relative error √(Σ_{i>K} λᵢ / Σλᵢ), λ the eigenvalues of the response covariance (the rank
 * selection of Zhang, Zou, He & Sun, TPAMI 2016); the allocation of ranks.ts then meets the target
 * with the least summed loss. The kernels' spectra of MobileNet's 1×1 convs are flat (rank 1 of 8
 * loses 90 % of a kernel) while a few directions carry most of their responses: on a Teachable
 * Machine model (MobileNetV2 0.35) at 2×, ranks from response spectra agreed with the original on
 * 85.1 % of 1,000 other photos, from filter spectra on 77.9 %.
 *
 * Only when every candidate's scheme has such a curve (`Scheme.responseSpectrum`: the channel
 * scheme, whose data fit is closed-form): other schemes have none, and a response error beside a
 * filter error would compare unlike things.
 */
import * as tf from '@tensorflow/tfjs';
import type { ImageStore } from '../data/store.js';
import type { LayerInfo } from '../model/layers.js';
import type { ModelSource } from '../model/topology.js';
import { makeTap } from '../reconstruct/taps.js';
import type { Reporter } from '../report/progress.js';
import { selectSchemes, targetLayer, type ResponseSpectrum } from '../schemes/index.js';
import type { CompressPlan } from './plan.js';
import { allocateRanks, equalFractionError, type Candidate, type Replacement } from './ranks.js';
import { leftByChoice } from './select.js';

/** Fitting images the response spectra are measured on (the covariances are C × C, whatever the count). */
export const RESPONSE_IMAGES = 64;
/**
 * Images tapped at once: every candidate's input is on the heap together, ~20 MB an image on a
 * 224 px MobileNetV2 (whose heap grew by 1 GB at 32), and the wasm heap never shrinks.
 */
const TAP_IMAGES = 4;

/** The layers the plan's allocation left as they are by choice (replacing them did not pay). */
export function leftByChoiceLayers(plan: CompressPlan): LayerInfo[] {
  return plan.skipped.filter((s) => s.byChoice).map((s) => plan.layers.find((l) => l.name === s.name)!);
}

/** The layers a speedup allocation may rank: the plan's, and those the filter spectra left by choice. */
export function allocationCandidates(plan: CompressPlan): Replacement[] {
  const schemes = selectSchemes(plan.scheme.recipe);
  const left = leftByChoiceLayers(plan);
  return [...plan.ranked.map(({ info, scheme }) => ({ info, scheme })), ...left.map((info) => ({ info, scheme: schemes.of(info) }))]
    .sort((a, b) => plan.layers.indexOf(a.info) - plan.layers.indexOf(b.info));
}

/** Whether ranks can come from response spectra: every candidate's scheme has one. */
export function responseSpectraApply(plan: CompressPlan): boolean {
  const candidates = allocationCandidates(plan);
  return candidates.length > 0 && candidates.every((c) => c.scheme.responseSpectrum !== undefined);
}

/** The candidates with their response error curves, measured on the first RESPONSE_IMAGES of `images` through the original model. */
export async function responseCandidates(source: ModelSource, plan: CompressPlan, images: ImageStore, reporter: Reporter): Promise<Candidate[]> {
  const replacements = allocationCandidates(plan);
  const spectra: ResponseSpectrum[] = replacements.map((c) => c.scheme.responseSpectrum!(targetLayer(c.info, source.topology)));
  const sample = images.head(RESPONSE_IMAGES);
  await sample.load();
  const progress = reporter.phase('measuring the layers\' responses', sample.count, 'images');
  const tap = makeTap(source.model, replacements.map((c) => c.info.name), false);
  let done = 0;
  for await (const batch of sample.batches()) {
    for (let start = 0; start < batch.x.shape[0]; start += TAP_IMAGES) {
      const x = batch.x.slice(start, TAP_IMAGES);
      const { inputs } = tap(x);
      inputs.forEach((input, k) => spectra[k].add(input));
      tf.dispose([...inputs, x]);
      progress.update((done += x.shape[0]));
      await new Promise((resolve) => setImmediate(resolve));
    }
    batch.x.dispose();
  }
  const candidates = replacements.map((c, k) => ({ ...c, error: spectra[k].errorCurve() }));
  progress.finish();
  return candidates;
}

/** `plan` with ranks for `target`× from `candidates`' response curves; `plan` as it is when they cannot reach it. */
export function planByResponses(plan: CompressPlan, candidates: Candidate[], target: number, images: number): CompressPlan {
  const allocation = allocateRanks(plan.layers, candidates, target);
  if (!allocation) return plan;
  const why = leftByChoice(target, `predicted response error on ${images} fitting images`);
  return {
    ...plan,
    ranked: candidates.filter((c) => allocation.ranks.has(c.info.name)).map(({ info, scheme }) => ({ info, scheme, rank: allocation.ranks.get(info.name)!, slower: false })),
    skipped: [
      ...plan.skipped.filter((s) => !s.byChoice),
      ...candidates.filter((c) => !allocation.ranks.has(c.info.name)).map((c) => ({ name: c.info.name, reason: why, byChoice: true as const })),
    ],
    allocation: { ...allocation, target, baselineError: equalFractionError(plan.layers, candidates, target), basis: 'responses' },
  };
}
