/**
 * Rank selection by measured sensitivity (`compress --speedup X --data …`): instead of predicting
 * each layer's damage from its kernel's spectrum, measure it. For every chosen layer and a ladder
 * of candidate ranks, the layer is factorized and its last factor solved exactly to reproduce the
 * layer's response on a sample of the fitting images (the cheap first step of data
 * reconstruction, which the run then applies in full); the model with only that layer replaced
 * runs on the sample, and the relative change of the model's output ‖f − f̂‖/‖f‖ is that layer's
 * cost at that rank (interpolated between the measured ranks). The allocation of ranks.ts then
 * meets the target with the least summed measured error. Fitting images, not the held-out ones,
 * are used, so the held-out report stays an honest check of the choice.
 */
import * as tf from '@tensorflow/tfjs';
import { performance } from 'node:perf_hooks';
import { buildCompressed, type CompressPlan } from './compress.js';
import { convGeometry } from './cost.js';
import { DEFAULT_CACHE_BYTES, LayerCache, type ImageStore } from './reconstruct/data.js';
import { DEFAULT_FIT, fitLayer } from './reconstruct/fit.js';
import { addOffset, weightValue } from './reconstruct/index.js';
import { linearResponse } from './reconstruct/ops.js';
import type { Reporter } from './reconstruct/progress.js';
import { makeTap } from './reconstruct/taps.js';
import { allocateRanks, rankCap, ranksForSpeedup, type Candidate } from './ranks.js';
import { targetLayer } from './schemes/index.js';

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
async function outputs(model: tf.LayersModel, batches: tf.Tensor4D[]): Promise<tf.Tensor[]> {
  return batches.map((x) => tf.tidy(() => ([model.predict(x)].flat()[0] as tf.Tensor).reshape([x.shape[0], -1])));
}

/** Per layer, the measured output error at each candidate rank: independent of the target. */
export interface Sensitivity {
  layers: { name: string; points: { rank: number; error: number }[] }[];
  /** Fitting images measured on. */
  images: number;
  seconds: number;
}

export interface SensitivityResult {
  plan: CompressPlan;
  /** Per layer, the measured output error at each candidate rank. */
  measured: Sensitivity['layers'];
  images: number;
}

/**
 * Measures every ranked layer of `plan` at its ladder of candidate ranks. The curves do not depend
 * on the speedup target, so one measurement serves every target (see `planForTarget`).
 */
export async function measureSensitivity(
  original: tf.LayersModel, topology: any, plan: CompressPlan, images: ImageStore, reporter: Reporter,
): Promise<Sensitivity> {
  const start = performance.now();
  const sample = images.head(SENSITIVITY_IMAGES);
  const batches: tf.Tensor4D[] = [];
  for await (const b of sample.batches()) batches.push(b.x);
  const n = sample.count;
  const reference = await outputs(original, batches);
  const norm = reference.reduce((s, y) => s + tf.tidy(() => y.square().sum().dataSync()[0]), 0);
  const layers = plan.ranked.map((r) => r.info);
  const schemes = plan.ranked.map((r) => r.scheme);
  const ladders = layers.map((info, i) => rankLadder(rankCap({ info, scheme: schemes[i], error: [] }), SENSITIVITY_RANKS));
  const progress = reporter.phase('measuring layer sensitivity', ladders.reduce((s, l) => s + l.length, 0), 'ranks');
  let done = 0;
  const measured: Sensitivity['layers'] = [];
  for (const [i, info] of layers.entries()) {
    const target = targetLayer(info, topology);
    const { kh, kw, C, N } = target.geometry;
    const kernel = tf.tensor4d(target.kernel, [kh, kw, C, N]);
    const tap = makeTap(original, [info.name], false);
    const cache = new LayerCache(sample, (x) => tf.tidy(() => {
      const phi = tap(x).inputs[0];
      return { x: phi, y: linearResponse(phi, kernel, target.geometry) };
    }), DEFAULT_CACHE_BYTES);
    await cache.fill(() => {});
    const points: { rank: number; error: number }[] = [];
    for (const rank of ladders[i]) {
      const initial = schemes[i].factorize(target, rank);
      const form = schemes[i].factored(target, rank);
      const fit = await fitLayer(form, initial.factors, cache, target.bias !== null, { ...DEFAULT_FIT, iterations: 0, seed: 0 }, { iteration() {}, solve() {} });
      form.dispose();
      const solved = { ...initial, factors: fit.factors.map(weightValue), bias: addOffset(target.bias, fit.offset) };
      tf.dispose(fit.factors);
      const built = await buildCompressed(original, topology, [solved]);
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

/** `plan`'s ranks re-chosen for `target`× from measured sensitivities (of `plan`'s ranked layers). */
export function planForTarget(plan: CompressPlan, sensitivity: Sensitivity, target: number): CompressPlan {
  const candidates: Candidate[] = plan.ranked.map(({ info, scheme }) => {
    const points = sensitivity.layers.find((l) => l.name === info.name)!.points;
    return { info, scheme, error: interpolate(points, scheme.fullRank(convGeometry(info))) };
  });
  const allocation = allocateRanks(plan.layers, candidates, target)!;
  const baseline = ranksForSpeedup(plan.layers, candidates, target);
  return {
    ...plan,
    ranked: plan.ranked.filter((r) => allocation.ranks.has(r.info.name)).map((r) => ({ ...r, rank: allocation.ranks.get(r.info.name)! })),
    allocation: { ...allocation, target, baselineError: baseline?.predictedError ?? null, basis: 'measured' },
  };
}

/** Re-chooses `plan`'s ranks for `target`× from measured sensitivities. */
export async function planBySensitivity(
  original: tf.LayersModel, topology: any, plan: CompressPlan, images: ImageStore, target: number, reporter: Reporter,
): Promise<SensitivityResult> {
  const sensitivity = await measureSensitivity(original, topology, plan, images, reporter);
  return { plan: planForTarget(plan, sensitivity, target), measured: sensitivity.layers, images: sensitivity.images };
}
