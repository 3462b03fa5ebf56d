/**
 * Per-layer sensitivity curves measured on the fitting images (never the held-out ones, so the
 * held-out report stays an honest check of the choice), and ranks chosen from them
 * (`measureSensitivity` and `planForTarget`: sweep, --max-loss, --measured with --data; one
 * measurement serves every target): per layer and for a ladder of candidate ranks, the layer alone
 * is factorized and its last factor solved exactly on a sample of the fitting images; the relative
 * change of the model's output ‖f − f̂‖/‖f‖ is that layer's cost at that rank (interpolated between
 * the measured ranks), and the allocation of ranks.ts meets each target with the least summed cost.
 */
import * as tf from '@tensorflow/tfjs';
import { performance } from 'node:perf_hooks';
import type { CompressPlan } from './plan.js';
import { convGeometry } from '../model/cost.js';
import { DEFAULT_CACHE_BYTES, imageSamples, LayerCache, type ImageStore } from '../data/store.js';
import { DEFAULT_FIT, fitLayer } from '../reconstruct/fit.js';
import { addOffset, weightValue } from '../reconstruct/index.js';
import { linearResponse } from '../linalg/conv-ops.js';
import type { Reporter } from '../report/progress.js';
import { makeTap } from '../reconstruct/taps.js';
import { allocateRanks, equalFractionError, rankCap, type Candidate } from './ranks.js';
import { targetLayer } from '../schemes/index.js';
import type { ModelSource } from '../model/topology.js';
import { buildCompressed } from '../model/rewrite.js';
import { leftByChoice } from './select.js';

/** Images the sensitivity of each (layer, rank) is measured on. */
export const SENSITIVITY_IMAGES = 256;
/** Candidate ranks measured per layer (geometric between 1 and the layer's highest saving rank). */
export const SENSITIVITY_RANKS = 8;

/** Up to `count` distinct ranks from 1 to `cap`, spaced geometrically, always including both ends. */
export function rankLadder(cap: number, count: number): number[] {
  const out = new Set<number>([1, cap]);
  for (let i = 1; i < count - 1; i++) out.add(Math.round(Math.exp((Math.log(cap) * i) / (count - 1))));
  return [...out].filter((r) => r >= 1 && r <= cap).sort((a, b) => a - b);
}

/** A curve over ranks 0…full from measurements at some ranks: linear between them, flat beyond. */
export function interpolate(measured: { rank: number; error: number }[], full: number): Float64Array {
  const out = new Float64Array(full + 1);
  for (let r = 0; r <= full; r++) {
    const hi = measured.findIndex((m) => m.rank >= r);
    if (hi <= 0) out[r] = measured[hi < 0 ? measured.length - 1 : 0].error;
    else {
      const a = measured[hi - 1];
      const b = measured[hi];
      out[r] = a.error + ((b.error - a.error) * (r - a.rank)) / (b.rank - a.rank);
    }
  }
  return out;
}

/** The model's first output on the sample, as one tensor per batch (kept). */
export async function outputs(model: tf.LayersModel, batches: tf.Tensor4D[]): Promise<tf.Tensor[]> {
  return batches.map((x) => tf.tidy(() => ([model.predict(x)].flat()[0] as tf.Tensor).reshape([x.shape[0], -1])));
}

/** Per layer, the measured output error at each candidate rank: independent of the target. */
export interface Sensitivity {
  layers: { name: string; points: { rank: number; error: number }[] }[];
  /** Fitting images measured on. */
  images: number;
  seconds: number;
}

/**
 * Measures every ranked layer of `plan` at its ladder of candidate ranks. The curves do not depend
 * on the speedup target, so one measurement serves every target (see `planForTarget`).
 */
export async function measureSensitivity(
  source: ModelSource, plan: CompressPlan, images: ImageStore, reporter: Reporter,
): Promise<Sensitivity> {
  const original = source.model;
  const start = performance.now();
  const sample = images.head(SENSITIVITY_IMAGES);
  const batches: tf.Tensor4D[] = [];
  for await (const b of sample.batches()) batches.push(b.x);
  const n = sample.count;
  const reference = await outputs(original, batches);
  const norm = reference.reduce((s, y) => s + tf.tidy(() => y.square().sum().dataSync()[0]), 0);
  const layers = plan.ranked.map((r) => r.info);
  const schemes = plan.ranked.map((r) => r.scheme);
  const ladders = layers.map((info, i) => rankLadder(rankCap({ info, scheme: schemes[i] }), SENSITIVITY_RANKS));
  const progress = reporter.phase('measuring layer sensitivity', ladders.reduce((s, l) => s + l.length, 0), 'ranks');
  let done = 0;
  const measured: Sensitivity['layers'] = [];
  for (const [i, info] of layers.entries()) {
    const target = targetLayer(info, source.topology);
    const { kh, kw, C, N } = target.geometry;
    const kernel = tf.tensor4d(target.kernel, [kh, kw, C, N]);
    const tap = makeTap(original, [info.name], false);
    const cache = new LayerCache(imageSamples(sample, (x) => tf.tidy(() => {
      const phi = tap(x).inputs[0];
      return { x: phi, y: linearResponse(phi, kernel, target.geometry) };
    })), DEFAULT_CACHE_BYTES);
    await cache.fill(() => {});
    const points: { rank: number; error: number }[] = [];
    for (const rank of ladders[i]) {
      const initial = schemes[i].factorize(target, rank);
      const form = schemes[i].factored(target, rank);
      const fit = await fitLayer(form, initial.factors, cache, target.bias !== null, { ...DEFAULT_FIT, iterations: 0, seed: 0 }, { iteration() {}, solve() {} });
      form.dispose();
      const solved = { ...initial, factors: fit.factors.map(weightValue), bias: addOffset(target.bias, fit.offset) };
      tf.dispose(fit.factors);
      const built = await buildCompressed(source, [solved]);
      const approx = await outputs(built.model, batches);
      const sse = approx.reduce((s, y, k) => s + tf.tidy(() => y.sub(reference[k]).square().sum().dataSync()[0]), 0);
      tf.dispose(approx);
      built.model.dispose();
      points.push({ rank, error: Math.sqrt(sse / Math.max(norm, 1e-30)) });
      progress.update(++done);
      await new Promise((resolve) => setImmediate(resolve));
    }
    // More rank never hurts the best filter reconstruction; keep the measured curve monotone so
    // noise on a small sample cannot make the allocator prefer fewer ranks for their own sake.
    for (let k = points.length - 2; k >= 0; k--) points[k].error = Math.max(points[k].error, points[k + 1].error);
    cache.dispose();
    kernel.dispose();
    measured.push({ name: info.name, points });
  }
  progress.finish();
  tf.dispose([...batches, ...reference]);
  return { layers: measured, images: n, seconds: (performance.now() - start) / 1000 };
}

/** `plan`'s ranked layers as candidates whose error at each rank is their measured sensitivity. */
export function sensitivityCandidates(plan: CompressPlan, sensitivity: Sensitivity): Candidate[] {
  return plan.ranked.map(({ info, scheme }) => {
    const points = sensitivity.layers.find((l) => l.name === info.name)!.points;
    return { info, scheme, error: interpolate(points, scheme.fullRank(convGeometry(info))) };
  });
}

/** `plan`'s ranks re-chosen for `target`× from measured sensitivities (of `plan`'s ranked layers). */
export function planForTarget(plan: CompressPlan, sensitivity: Sensitivity, target: number): CompressPlan {
  const candidates = sensitivityCandidates(plan, sensitivity);
  const allocation = allocateRanks(plan.layers, candidates, target)!;
  return {
    ...plan,
    ranked: plan.ranked.filter((r) => allocation.ranks.has(r.info.name)).map((r) => ({ ...r, rank: allocation.ranks.get(r.info.name)! })),
    skipped: [...plan.skipped, ...plan.ranked.filter((r) => !allocation.ranks.has(r.info.name)).map((r) => ({ name: r.info.name, reason: leftByChoice(target, 'measured output error'), byChoice: true as const }))],
    allocation: { ...allocation, target, baselineError: equalFractionError(plan.layers, candidates, target), basis: 'measured' },
  };
}

