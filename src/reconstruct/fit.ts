/**
 * Fitting one replaced layer to data (the paper's eq. 4): minimise Σ‖Y − Ŷ‖² over the sample
 * images, Y = W*Φ the original layer's linear response and Ŷ the replacement's on Φ̃, starting from
 * the filter-reconstruction factors.
 *
 * 1. Adam on all factors (and an output offset that folds into the bias) over minibatches of
 *    cached samples, with the scheme's factored forward/backward. All factors move together:
 *    holding the last factor at its exact optimum after every step would need the whole data set
 *    per step. Learning rates are relative to each factor's scale (η·rms), warmed up and
 *    cosine-decayed. A minibatch's gradient is summed from fixed shards that run on every core
 *    (shards.ts); the update itself runs on plain arrays.
 * 2. The last linear factor (Scheme 2: horizontal; Scheme 1: the 1×1 pointwise) and the offset are
 *    then solved exactly given the others, from normal equations accumulated over every fitting
 *    image: Adam leaves it near but not at its optimum, and the solve costs one pass.
 *
 * Both minimise the data error plus a small multiple of the filter-reconstruction error,
 *   ½·Σ‖Y − Ŷ‖²/R + ½·κ·μ·‖W − Ŵ‖²,   μ = mean squared patch entry,
 * which is the data error with the patch second moment shrunk toward μ·I (κ = its weight): with
 * few images per input dimension (conv3 of the character CNN sees one 8×8×128 patch per image) the
 * plain data optimum fits the samples and not the layer; the prior keeps it close to the layer's own
 * kernel where the samples say nothing. The filter-reconstruction start is kept if the result is not
 * better on the fitting images.
 */
import * as tf from '@tensorflow/tfjs';
import type { FactoredForm, WeightValue } from '../schemes/index.js';
import { solveSymmetric } from '../linalg/solve.js';
import { mulberry32 } from '../runtime/random.js';
import { conv, matMulT, pad2d, paddingOf } from '../linalg/conv-ops.js';
import type { LayerCache, LayerSample } from '../data/store.js';
import { localRunner, nonFiniteActivations, type LayerSource, type ShardPool } from './shards.js';

export interface FitOptions {
  /** Adam steps, or 'auto': up to MAX_AUTO_STEPS within AUTO_STEP_MACS (see autoSteps). */
  iterations: number | 'auto';
  /** Images per minibatch. */
  batch: number;
  seed: number;
  /** Weight of the filter-reconstruction prior (see above). */
  kappa: number;
  /** With 'auto' iterations: the MACs the layer's steps may take (default AUTO_STEP_MACS). */
  stepMacs?: number;
  /** Adam step as a fraction of each factor's rms. */
  lr: number;
}

export const DEFAULT_FIT: Omit<FitOptions, 'seed'> = { iterations: 'auto', batch: 32, kappa: 0.2, lr: 0.1 };

/**
 * 'auto' steps: 300, or fewer when a step is costly, so that the iterative phase of one layer
 * stays within ~120 G multiply-accumulates (~10 s of wasm on 2 cores). High ranks are costly per
 * step and need little fitting (their filter reconstruction is already close; the exact solve of
 * the last factor does most of the work): the charcnn's conv2 gets 300 steps at rank 21 (8×
 * speedup), ~75 at rank 83 (2.5×).
 */
export const MAX_AUTO_STEPS = 300;
export const AUTO_STEP_MACS = 120e9;

/** Fewest 'auto' steps worth running. */
const MIN_AUTO_STEPS = 20;

/**
 * `budget`: the layer's MACs when it is below AUTO_STEP_MACS (a model with many layers shares a
 * budget among them, budget.ts); a layer it buys fewer than MIN_AUTO_STEPS gets none (the exact
 * solve of its last factor alone).
 */
export function autoSteps(fl: Pick<FactoredForm, 'macsPerImage' | 'priorMacs'>, batch: number, budget = AUTO_STEP_MACS): number {
  const step = dataStepMacs(fl, batch) + fl.priorMacs / priorInterval(fl, batch);
  const steps = Math.floor(budget / step);
  if (budget < AUTO_STEP_MACS && steps < MIN_AUTO_STEPS) return 0;
  return Math.max(MIN_AUTO_STEPS, Math.min(MAX_AUTO_STEPS, steps));
}

/** Forward plus the gradient of every factor ≈ 4 forward passes of the minibatch. */
const dataStepMacs = (fl: Pick<FactoredForm, 'macsPerImage'>, batch: number) => 4 * batch * fl.macsPerImage;

/**
 * Steps between refreshes of the prior's gradient, which changes slowly: every 8 steps, or less
 * often when it would cost more than an eighth of the data steps (conv3 of the character CNN: a
 * 1024×K×1024 product against 32 images of one output position each, refreshed every 22 steps).
 */
function priorInterval(fl: Pick<FactoredForm, 'macsPerImage' | 'priorMacs'>, batch: number): number {
  return Math.max(8, Math.ceil((8 * fl.priorMacs) / dataStepMacs(fl, batch)));
}

export interface FitProgress {
  iteration(done: number, total: number, relativeError: number): void;
  solve(done: number, total: number): void;
  /** The pass measuring the solved factors' error on every fitting image. */
  check?(done: number, total: number): void;
}

export interface FitResult {
  factors: tf.Tensor[];
  /** Added to the layer's bias (null when the layer has none). */
  offset: Float32Array | null;
  /** Relative error ‖Y − Ŷ‖/‖Y‖ on the fitting images, of the start and of the kept factors. */
  fitError: { filter: number; data: number };
  kept: 'data' | 'filter';
  iterations: number;
}

/** Mean over rows and patch entries of the squared layer input: μ. */
function patchEnergy(fl: FactoredForm, x: tf.Tensor4D): { sum: number; rows: number } {
  const g = fl.g;
  return tf.tidy(() => {
    const [h, w] = paddingOf(g);
    const sq = pad2d(x, h, w).square().sum(3, true) as tf.Tensor4D;
    const ones = tf.ones([g.kh, g.kw, 1, 1]) as tf.Tensor4D;
    const e = conv(sq, ones, [g.sh, g.sw], [g.dh, g.dw]);
    return { sum: e.sum().dataSync()[0], rows: e.size };
  });
}

/** ‖Y − forward(X) − offset‖² of one batch of samples. */
function squaredError(fl: FactoredForm, s: LayerSample, f: tf.Tensor[], offset: tf.Tensor1D | null): tf.Scalar {
  return tf.tidy(() => {
    let e = fl.forward(s.x, f).sub(s.y);
    if (offset) e = e.add(offset);
    return e.square().sum();
  });
}

function rms(t: tf.Tensor): number {
  return tf.tidy(() => Math.sqrt(t.square().mean().dataSync()[0])) || 1;
}

const BETA1 = 0.9;
const BETA2 = 0.999;

/**
 * One Adam step (t from 1) in place on x, with moments m and v, for the gradient
 * g·gScale + reg·regScale (reg: the prior's gradient, or null).
 */
function adamUpdate(
  x: Float32Array, g: Float32Array, gScale: number, reg: Float32Array | null, regScale: number, m: Float32Array, v: Float32Array, t: number, rate: number,
): void {
  const c1 = 1 / (1 - BETA1 ** t);
  const c2 = 1 / (1 - BETA2 ** t);
  for (let i = 0; i < x.length; i++) {
    const gi = g[i] * gScale + (reg === null ? 0 : reg[i] * regScale);
    const mi = BETA1 * m[i] + (1 - BETA1) * gi;
    const vi = BETA2 * v[i] + (1 - BETA2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    x[i] -= ((mi * c1) / (Math.sqrt(vi * c2) + 1e-12)) * rate;
  }
}

/** Seeded minibatches of image indices, epoch by epoch. */
function minibatches(n: number, batch: number, seed: number): () => number[] {
  const random = mulberry32(seed);
  let order: number[] = [];
  let pos = n;
  return () => {
    const out: number[] = [];
    while (out.length < batch) {
      if (pos >= n) {
        order = random.shuffle(Array.from({ length: n }, (_, i) => i));
        pos = 0;
      }
      out.push(order[pos++]);
    }
    return out;
  };
}

/**
 * Fits one layer: Adam steps on the factors (1), then an exact solve of the last factor and the
 * offset over every fitting image (2), kept only when it beats the start on the fitting images.
 * `workers`: where the Adam steps' shards run (with the layer they rebuild the factored form from),
 * or null to run them in this thread.
 */
export async function fitLayer(
  fl: FactoredForm, initial: WeightValue[], cache: LayerCache, hasBias: boolean, options: FitOptions, progress: FitProgress,
  workers: { pool: ShardPool; layer: LayerSource } | null = null,
): Promise<FitResult> {
  const N = fl.g.N;
  const start = initial.map((w) => tf.tensor(w.values, w.shape));
  const prior = options.kappa * await inputEnergy(fl, cache, options.batch);

  // 1. Adam.
  const batchSize = Math.min(options.batch, cache.n);
  const iterations = options.iterations === 'auto' ? autoSteps(fl, batchSize, options.stepMacs) : options.iterations;
  const { factors, offset } = iterations > 0
    ? await adamSteps(fl, initial, start, cache, hasBias, { ...options, batch: batchSize, iterations, prior }, progress, workers)
    : { factors: start.map((t) => t.clone()), offset: hasBias ? tf.zeros([N]) as tf.Tensor1D : null };

  // 2. Exact solve of the last factor (and offset) over every fitting image, with the start's and
  //    the Adam result's errors measured in the same pass; the solution's error in a second one.
  const normal = await normalEquations(fl, cache, factors, start, offset, hasBias, options.batch, progress);
  const { solvedLast, solvedOffset, solvedFactors } = solveLastFactor(fl, factors, normal, prior, hasBias);
  // The solution's data error is measured directly, in a second pass: from the accumulated sums,
  // yy − 2⟨A, rhs⟩ + ⟨A, gram·A⟩ cancels catastrophically when the fit is close (rank 400 of the
  // character CNN's conv2 on 150 images: 0 for a true 0.15%), and keep-or-revert below needs it.
  const sseSolved = await dataError(fl, cache, solvedFactors, solvedOffset, options.batch, progress);

  let result: { factors: tf.Tensor[]; offset: Float32Array | null; sse: number } = {
    factors: solvedFactors, offset: solvedOffset, sse: sseSolved,
  };
  // Never worse than the start on the fitting images: keep the filter reconstruction otherwise.
  const kept: 'data' | 'filter' = result.sse < normal.sseStart ? 'data' : 'filter';
  if (kept === 'filter') result = { factors: start, offset: hasBias ? new Float32Array(N) : null, sse: normal.sseStart };
  const keep = new Set(result.factors);
  tf.dispose([...start, ...factors, solvedLast, ...(offset ? [offset] : [])].filter((t) => !keep.has(t)));
  const rel = (sse: number) => Math.sqrt(sse / Math.max(normal.yy, 1e-30));
  return {
    factors: result.factors,
    offset: result.offset,
    fitError: { filter: rel(normal.sseStart), data: rel(result.sse) },
    kept,
    iterations,
  };
}

/** μ, the mean energy per patch entry of the layer's inputs over every fitting image: the filter prior's scale. */
async function inputEnergy(fl: FactoredForm, cache: LayerCache, batch: number): Promise<number> {
  const g = fl.g;
  let energy = 0;
  let rows = 0;
  for await (const { x, y } of cache.all(batch)) {
    const e = patchEnergy(fl, x);
    tf.dispose([x, y]);
    energy += e.sum;
    rows += e.rows;
  }
  if (!Number.isFinite(energy)) throw nonFiniteActivations();
  return energy / Math.max(1, rows) / (g.kh * g.kw * g.C);
}

/** Adam on minibatches of the cached samples (sharded over `workers` when given), with a warm-up and cosine schedule. */
async function adamSteps(
  fl: FactoredForm, initial: WeightValue[], start: tf.Tensor[], cache: LayerCache, hasBias: boolean,
  options: FitOptions & { batch: number; iterations: number; prior: number }, progress: FitProgress,
  workers: { pool: ShardPool; layer: LayerSource } | null,
): Promise<{ factors: tf.Tensor[]; offset: tf.Tensor1D | null }> {
  const { batch: batchSize, iterations, prior } = options;
  const N = fl.g.N;
  const next = minibatches(cache.n, batchSize, options.seed);
  const yScale = Math.sqrt(cache.targetMeanSquare()) || 1;
  const shapes = [...start.map((t) => t.shape), ...(hasBias ? [[N]] : [])];
  const runner = workers ? workers.pool.runner(fl, workers.layer, cache.samples, shapes, hasBias) : localRunner(fl, cache.samples, shapes, hasBias);
  // Parameters and Adam's moments as plain arrays: the update is a few element-wise passes, and
  // the shards read the parameters from the runner's (shared) arrays.
  const params = runner.values;
  initial.forEach((w, p) => params[p].set(w.values));
  const rates = [...start.map((t) => options.lr * rms(t)), options.lr * yScale];
  const m = params.map((v) => new Float32Array(v.length));
  const v = params.map((x) => new Float32Array(x.length));
  const warmup = Math.max(1, Math.round(iterations * 0.05));
  let smoothed = NaN;
  let priorGrads: Float32Array[] | null = null;
  const refresh = priorInterval(fl, batchSize);
  try {
    for (let t = 1; t <= iterations; t++) {
      const sums = runner.step(next());
      // The prior's gradient at the same parameters, computed here while the workers run.
      if (prior > 0 && (t - 1) % refresh === 0) {
        const fs = start.map((s, p) => tf.tensor(params[p], s.shape));
        const reg = fl.filterObjective(fs);
        priorGrads = reg.grads.map((g) => g.dataSync() as Float32Array);
        tf.dispose([...fs, reg.value, ...reg.grads]);
      }
      const { sse, yy, rows, grads } = await sums;
      const schedule = Math.min(1, t / warmup) * 0.5 * (1 + Math.cos((Math.PI * (t - 1)) / iterations));
      for (let p = 0; p < params.length; p++) {
        const reg = priorGrads && p < start.length ? priorGrads[p] : null;
        adamUpdate(params[p], grads[p], 1 / rows, reg, prior / 2, m[p], v[p], t, rates[p] * schedule);
      }
      const ratio = sse / yy;
      smoothed = Number.isNaN(smoothed) ? ratio : 0.9 * smoothed + 0.1 * ratio;
      progress.iteration(t, iterations, Math.sqrt(smoothed));
      if (t % 10 === 0) await new Promise((resolve) => setImmediate(resolve));
    }
  } finally {
    runner.dispose();
  }
  return {
    factors: start.map((t, p) => tf.tensor(params[p], t.shape)),
    offset: hasBias ? tf.tensor1d(params[start.length]) : null,
  };
}

/** Sums over every fitting image for the last factor's least squares, and the data errors they come with. */
interface NormalSums {
  /** Gram matrix and right-hand sides of [design, 1] (the 1 with a bias). */
  gram: Float64Array;
  rhs: Float64Array;
  /** ‖Y‖², and the start's squared error. */
  yy: number;
  sseStart: number;
  /** Output rows summed over. */
  total: number;
}

async function normalEquations(
  fl: FactoredForm, cache: LayerCache, factors: tf.Tensor[], start: tf.Tensor[], offset: tf.Tensor1D | null, hasBias: boolean, batch: number, progress: FitProgress,
): Promise<NormalSums> {
  const N = fl.g.N;
  const n = fl.lastFanIn;
  const dim = n + (hasBias ? 1 : 0);
  const gram = new Float64Array(dim * dim);
  const rhs = new Float64Array(dim * N);
  let yy = 0;
  let sseStart = 0;
  let total = 0;
  let done = 0;
  const zeros = offset ? tf.zerosLike(offset) : null;
  for await (const s of cache.all(batch)) {
    const r = s.y.shape[0];
    const [gramB, rhsB, colB, ySumB, stats] = tf.tidy(() => {
      const d = fl.design(s.x, factors);
      const gb = matMulT(d, d);
      const rb = matMulT(d, s.y);
      const st = tf.stack([s.y.square().sum(), squaredError(fl, s, start, zeros)]);
      return [gb, rb, d.sum(0), s.y.sum(0), st];
    });
    const [gd, rd, cd, yd, sd] = [gramB, rhsB, colB, ySumB, stats].map((t) => t.dataSync());
    tf.dispose([gramB, rhsB, colB, ySumB, stats, s.x, s.y]);
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < n; j++) gram[i * dim + j] += gd[i * n + j];
      for (let c = 0; c < N; c++) rhs[i * N + c] += rd[i * N + c];
    }
    if (hasBias) {
      for (let i = 0; i < n; i++) {
        gram[i * dim + n] += cd[i];
        gram[n * dim + i] += cd[i];
      }
      gram[n * dim + n] += r;
      for (let c = 0; c < N; c++) rhs[n * N + c] += yd[c];
    }
    yy += sd[0];
    sseStart += sd[1];
    total += r;
    done += s.x.shape[0];
    progress.solve(done, cache.total);
    await new Promise((resolve) => setImmediate(resolve));
  }
  zeros?.dispose();
  if (!Number.isFinite(yy) || !Number.isFinite(sseStart)) throw nonFiniteActivations();
  return { gram, rhs, yy, sseStart, total };
}

/** The normal equations of ½Σ‖Y − DA − o‖² + ½·κμR·‖W − Ŵ(A)‖² solved for the last factor A (and o). */
function solveLastFactor(
  fl: FactoredForm, factors: tf.Tensor[], { gram, rhs, total }: NormalSums, prior: number, hasBias: boolean,
): { solvedLast: tf.Tensor; solvedOffset: Float32Array | null; solvedFactors: tf.Tensor[] } {
  const N = fl.g.N;
  const n = fl.lastFanIn;
  const dim = n + (hasBias ? 1 : 0);
  const weight = prior * total;
  const reg = fl.filterNormal(factors);
  const a = Float64Array.from(gram);
  const b = Float64Array.from(rhs);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) a[i * dim + j] += weight * reg.gram[i * n + j];
    for (let c = 0; c < N; c++) b[i * N + c] += weight * reg.rhs[i * N + c];
  }
  const solution = solveSymmetric(a, b, dim, N);
  const lastShape = factors[fl.last].shape;
  const solvedLast = tf.tensor(Float32Array.from(solution.subarray(0, n * N)), lastShape);
  const solvedOffset = hasBias ? Float32Array.from(solution.subarray(n * N, dim * N)) : null;
  return { solvedLast, solvedOffset, solvedFactors: factors.map((t, i) => (i === fl.last ? solvedLast : t)) };
}

/** Squared data error of `factors` (and `offset`) over every fitting image. */
async function dataError(fl: FactoredForm, cache: LayerCache, factors: tf.Tensor[], offset: Float32Array | null, batch: number, progress: FitProgress): Promise<number> {
  let sse = 0;
  let checked = 0;
  const offsetTensor = offset ? tf.tensor1d(offset) : null;
  for await (const s of cache.all(batch)) {
    sse += tf.tidy(() => squaredError(fl, s, factors, offsetTensor).dataSync()[0]);
    checked += s.x.shape[0];
    tf.dispose([s.x, s.y]);
    progress.check?.(checked, cache.total);
    await new Promise((resolve) => setImmediate(resolve));
  }
  offsetTensor?.dispose();
  return sse;
}

/**
 * Fitting a layer whose factored form has a closed-form data optimum (`closedForm`, e.g. the
 * channel scheme): one pass over every fitting image streams its statistics, one solve minimises
 * the same objective as above exactly, and a second pass measures the start's and the solution's
 * errors directly (from the statistics they cancel catastrophically, as in fitLayer). Kept only
 * if better than the start on the fitting images.
 */
export async function fitClosedForm(
  fl: FactoredForm, initial: WeightValue[], samples: LayerCache, hasBias: boolean, options: Pick<FitOptions, 'batch' | 'kappa'>, progress: FitProgress,
): Promise<FitResult> {
  const statistics = fl.closedForm!();
  let done = 0;
  for await (const s of samples.all(options.batch)) {
    statistics.add(s.x, s.y);
    done += s.x.shape[0];
    tf.dispose([s.x, s.y]);
    progress.solve(done, samples.total);
    await new Promise((resolve) => setImmediate(resolve));
  }
  const solution = statistics.solve(initial, hasBias, options.kappa);
  const start = initial.map((w) => tf.tensor(w.values, w.shape));
  const solved = solution.factors.map((w) => tf.tensor(w.values, w.shape));
  const offset = solution.offset ? tf.tensor1d(solution.offset) : null;
  let yy = 0;
  let sseStart = 0;
  let sseSolved = 0;
  let checked = 0;
  for await (const s of samples.all(options.batch)) {
    const sums = tf.tidy(() => tf.stack([s.y.square().sum(), squaredError(fl, s, start, null), squaredError(fl, s, solved, offset)]).dataSync());
    yy += sums[0];
    sseStart += sums[1];
    sseSolved += sums[2];
    checked += s.x.shape[0];
    tf.dispose([s.x, s.y]);
    progress.check?.(checked, samples.total);
    await new Promise((resolve) => setImmediate(resolve));
  }
  offset?.dispose();
  if (!Number.isFinite(yy) || !Number.isFinite(sseStart)) throw nonFiniteActivations();
  const kept: 'data' | 'filter' = sseSolved < sseStart ? 'data' : 'filter';
  const rel = (sse: number) => Math.sqrt(sse / Math.max(yy, 1e-30));
  tf.dispose(kept === 'data' ? start : solved);
  return {
    factors: kept === 'data' ? solved : start,
    offset: kept === 'data' ? solution.offset : hasBias ? new Float32Array(fl.g.N) : null,
    fitError: { filter: rel(sseStart), data: rel(kept === 'data' ? sseSolved : sseStart) },
    kept,
    iterations: 0,
  };
}
