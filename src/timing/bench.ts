/**
 * Measured speed and agreement of two models on one backend. Timing interleaves the models
 * (A B A B …) so drift hits both, a prediction counts only once its data is read back, and each
 * speedup comes with a distribution-free 95 % interval of the median paired ratio.
 */
import * as tf from '@tensorflow/tfjs';
import { performance } from 'node:perf_hooks';
import { layerMacs } from '../model/cost.js';
import { UserError } from '../errors.js';
import { yieldToSignals } from '../runtime/interrupt.js';
import { imageBatches, modelImageSize, type BatchStats, type ImageEntry, type PixelOptions } from '../data/images.js';
import { checkFiniteActivations, nonFiniteSummary } from '../model/finite.js';
import { CONV_CLASSES, listLayers, type LayerInfo, type Shape } from '../model/layers.js';
import { pieceSuffixes } from '../schemes/index.js';
import { top1 } from '../model/outputs.js';
import { silentReporter, type Phase, type Reporter } from '../report/progress.js';
import { formatBytes } from '../report/format.js';

export interface TimingStats {
  medianMs: number;
  p10Ms: number;
  p90Ms: number;
  imagesPerSec: number;
}

export type Verdict = 'faster' | 'slower' | 'within noise';

/** A speedup read from paired runs: before/after time of the same run pair. */
export interface Ratio {
  /** Median of the paired per-run ratios before/after. */
  speedup: number;
  /** 95 % interval of that median. */
  speedupLow: number;
  speedupHigh: number;
  /** 'within noise' when the interval reaches within NOISE_MARGIN of 1×. */
  verdict: Verdict;
  /** True when the interval is too wide to read (high/low above WIDE_INTERVAL). */
  wide: boolean;
}

export interface BatchTiming extends Ratio {
  batch: number;
  /** Timed runs per model (the --runs asked for, raised to MIN_RUNS and MIN_TIMED_MS). */
  runs: number;
  before: TimingStats;
  after: TimingStats;
}

/** Fewest timed runs per model and batch: enough for a 95 % interval of the median. */
export const MIN_RUNS = 10;
/** Least timed time per model and batch: short runs are timed more often. */
export const MIN_TIMED_MS = 500;
/** Timed and warm-up runs per model and batch when none are asked for. */
export const DEFAULT_RUNS = 20;
export const DEFAULT_WARMUP = 3;
/**
 * Speedups whose interval comes this close to 1× are not reported as a difference: two copies of
 * one model can differ by a percent or two (memory placement), which many runs would call real.
 */
export const NOISE_MARGIN = 0.03;
/** An interval whose high/low exceeds this is too wide to read. */
export const WIDE_INTERVAL = 1.25;

export function quantile(values: number[], q: number): number {
  const s = [...values].sort((a, b) => a - b);
  const pos = (s.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return s[lo] + (s[hi] - s[lo]) * (pos - lo);
}

/**
 * Distribution-free 95 % interval of the median: the k-th smallest and k-th largest values, k the
 * largest with P(Binomial(n, ½) < k) ≤ 2.5 %. Below 6 values no k qualifies: min–max (lower coverage).
 */
export function medianInterval(values: number[]): [number, number] {
  const s = [...values].sort((a, b) => a - b);
  const n = s.length;
  let k = 1;
  let logP = -n * Math.LN2; // log P(X = 0)
  let below = Math.exp(logP); // P(X ≤ k − 1)
  while (k < n / 2) {
    logP += Math.log((n - k + 1) / k);
    if (below + Math.exp(logP) > 0.025) break;
    below += Math.exp(logP);
    k++;
  }
  return [s[k - 1], s[n - k]];
}

/** Speedup, interval and verdict from paired before/after times. */
export function pairedRatio(before: number[], after: number[]): Ratio {
  const ratios = before.map((v, i) => v / after[i]);
  const [low, high] = medianInterval(ratios);
  const speedup = quantile(ratios, 0.5);
  const verdict: Verdict = low <= 1 + NOISE_MARGIN && high >= 1 / (1 + NOISE_MARGIN) ? 'within noise' : speedup < 1 ? 'slower' : 'faster';
  return { speedup, speedupLow: low, speedupHigh: high, verdict, wide: high / low > WIDE_INTERVAL };
}

function stats(times: number[], batch: number): TimingStats {
  const median = quantile(times, 0.5);
  return { medianMs: median, p10Ms: quantile(times, 0.1), p90Ms: quantile(times, 0.9), imagesPerSec: (batch * 1000) / median };
}

/** One timed prediction: its time in milliseconds, data read back included. */
export type Timer = () => Promise<number>;

/** Time of one call, data read back included. */
async function timeOnce(run: () => tf.Tensor | tf.Tensor[]): Promise<number> {
  const start = performance.now();
  const out = run();
  const outs = Array.isArray(out) ? out : [out];
  await Promise.all(outs.map((t) => t.data()));
  const ms = performance.now() - start;
  tf.dispose(outs);
  return ms;
}

/** A timer of `run` in this process. */
const timerOf = (run: () => tf.Tensor | tf.Tensor[]): Timer => () => timeOnce(run);

/** A fixed-seed uniform [0,1) batch of the model's input shape. */
export function randomInput(inputShape: (number | null)[], batch: number, seed = 1): tf.Tensor {
  return tf.randomUniform([batch, ...(inputShape.slice(1) as number[])], 0, 1, 'float32', seed);
}

const sum = (values: number[]) => values.reduce((s, v) => s + v, 0);

/**
 * Interleaved timing of several timers, round after round (every other round in reverse order, so
 * none always runs on a warmer cache) until `enough` holds for the times so far (one list per
 * timer); `onRound` after each warm-up or timed round.
 */
async function timeRounds(timers: Timer[], warmup: number, enough: (times: number[][]) => boolean, onRound: () => void = () => {}): Promise<number[][]> {
  for (let i = 0; i < warmup; i++) {
    for (const t of timers) await t();
    onRound();
    await yieldToSignals(); // between rounds, outside the timed calls
  }
  const times = timers.map((): number[] => []);
  const order = timers.map((_, k) => k);
  const reversed = [...order].reverse();
  for (let i = 0; !enough(times); i++) {
    for (const k of i % 2 === 0 ? order : reversed) times[k].push(await timers[k]());
    onRound();
    await yieldToSignals();
  }
  return times;
}

/**
 * Interleaved timing of two timers on the same input: at least `runs` (and MIN_RUNS) pairs, and
 * more until each side has been timed for MIN_TIMED_MS; `onPair` after each warm-up or timed pair.
 */
export async function timePair(a: Timer, b: Timer, runs: number, warmup: number, onPair: () => void = () => {}): Promise<{ a: number[]; b: number[] }> {
  const enough = ([ta, tb]: number[][]) => ta.length >= Math.max(runs, MIN_RUNS) && sum(ta) >= MIN_TIMED_MS && sum(tb) >= MIN_TIMED_MS;
  const [ta, tb] = await timeRounds([a, b], warmup, enough, onPair);
  return { a: ta, b: tb };
}

/** Counts warm-up and timed pairs into a progress phase. */
function pairCounter(phase: Phase): () => void {
  let done = 0;
  return () => phase.update(++done);
}

/** Timed runs of the two models on one batch's input, and how to free that input afterwards. */
export interface PairTimers {
  before: Timer;
  after: Timer;
  release: () => void | Promise<void>;
}

/**
 * The speed table: the two models timed interleaved at each batch size, wherever `timersAt` runs
 * them (this process, a browser page).
 */
export async function timeBatches(
  batches: number[], runs: number, warmup: number, timersAt: (batch: number) => Promise<PairTimers>, reporter: Reporter = silentReporter,
): Promise<BatchTiming[]> {
  const out: BatchTiming[] = [];
  for (const batch of batches) {
    const timers = await timersAt(batch);
    const phase = reporter.phase(`timing batch ${batch}`, warmup + Math.max(runs, MIN_RUNS), 'runs');
    let t: { a: number[]; b: number[] };
    try {
      t = await timePair(timers.before, timers.after, runs, warmup, pairCounter(phase));
    } finally {
      await timers.release();
    }
    phase.finish();
    out.push({ batch, runs: t.a.length, before: stats(t.a, batch), after: stats(t.b, batch), ...pairedRatio(t.a, t.b) });
  }
  return out;
}

export async function timeModels(
  before: tf.LayersModel, after: tf.LayersModel, batches: number[], runs: number, warmup: number, reporter: Reporter = silentReporter,
): Promise<BatchTiming[]> {
  return timeBatches(batches, runs, warmup, async (batch) => {
    const x = randomInput(before.inputs[0].shape, batch);
    return { before: timerOf(() => before.predict(x)), after: timerOf(() => after.predict(x)), release: () => x.dispose() };
  }, reporter);
}

/** Largest batch bench runs: beyond it a timing says nothing new and the runs take minutes. */
export const MAX_BENCH_BATCH = 4096;
/** Activation memory a timed batch may take. */
export const BENCH_MEMORY = 2 * 1024 ** 3;

/** Float32 bytes of one example's largest layer input plus output: the peak of a forward pass, roughly. */
export function exampleActivationBytes(model: tf.LayersModel): number {
  const elements = (shape: Shape) => shape.slice(1).reduce<number>((a, d) => a * (d ?? 1), 1);
  let peak = 0;
  for (const l of listLayers(model)) {
    for (const call of l.calls) {
      const total = [...call.inputShapes, ...call.outputShapes].reduce((a, s) => a + elements(s), 0);
      peak = Math.max(peak, total);
    }
  }
  return 4 * peak;
}

/** Refuses batch sizes whose activations would not fit BENCH_MEMORY. */
export function checkBatchMemory(model: tf.LayersModel, batches: number[]): void {
  const perExample = exampleActivationBytes(model);
  for (const batch of batches) {
    if (batch * perExample > BENCH_MEMORY) {
      throw new UserError(
        `--batch ${batch}: about ${formatBytes(batch * perExample)} of activations (${formatBytes(perExample)} per example in the largest layer), over the ${formatBytes(BENCH_MEMORY)} budget; give at most ${Math.floor(BENCH_MEMORY / perExample)}`,
      );
    }
  }
}

/** Refuses models bench cannot run side by side: different shapes, several inputs, a free input dimension. */
export function checkComparable(before: tf.LayersModel, after: tf.LayersModel): void {
  if (before.inputs.length !== 1) {
    throw new UserError(`the model takes ${before.inputs.length} inputs; bench feeds models with a single input only`);
  }
  if (before.inputs[0].shape.slice(1).some((d) => d === null)) {
    throw new UserError(`the model's input shape ${JSON.stringify(before.inputs[0].shape)} has a free dimension besides the batch; bench needs a fixed input size`);
  }
  const shapes = (m: tf.LayersModel, which: 'inputs' | 'outputs') => JSON.stringify(m[which].map((t) => t.shape));
  if (shapes(before, 'inputs') !== shapes(after, 'inputs')) {
    throw new UserError(`the models take different inputs (${shapes(before, 'inputs')} vs ${shapes(after, 'inputs')}); bench compares a model with its compressed version`);
  }
  if (shapes(before, 'outputs') !== shapes(after, 'outputs')) {
    throw new UserError(`the models give different outputs (${shapes(before, 'outputs')} vs ${shapes(after, 'outputs')}); bench compares a model with its compressed version`);
  }
}

export interface Agreement {
  /** Examples compared. */
  examples: number;
  /** Fraction of examples whose top-1 class agrees (first output). */
  agreement: number;
  maxAbsDiff: number;
  meanAbsDiff: number;
  /** Top-1 accuracy of each model on labeled examples, or null without labels. */
  accuracyBefore: number | null;
  accuracyAfter: number | null;
  labeled: number;
  /** True when the inputs were random, not the user's images. */
  randomInputs: boolean;
}

/**
 * Both models' outputs (every output, in order) on a batch, computed in this process or elsewhere
 * (a browser page); the caller disposes them.
 */
export type PairPredict = (x: tf.Tensor) => Promise<{ before: tf.Tensor[]; after: tf.Tensor[] }>;

/** Both models run in this process. */
export function predictHere(before: tf.LayersModel, after: tf.LayersModel): PairPredict {
  const toList = (y: tf.Tensor | tf.Tensor[]) => (Array.isArray(y) ? y : [y]);
  return async (x) => ({ before: toList(before.predict(x) as tf.Tensor | tf.Tensor[]), after: toList(after.predict(x) as tf.Tensor | tf.Tensor[]) });
}

class AgreementCounter {
  examples = 0;
  agree = 0;
  maxAbs = 0;
  sumAbs = 0;
  count = 0;
  labeled = 0;
  correctBefore = 0;
  correctAfter = 0;

  /** `inputs` says what the examples are, for error messages ("these images", "random inputs"). */
  constructor(private readonly inputs: string) {}

  async add(x: tf.Tensor, labels: (number | null)[] | null, before: tf.LayersModel, after: tf.LayersModel, predict: PairPredict): Promise<void> {
    const { before: ya, after: yb } = await predict(x);
    for (const [model, ys, which] of [[before, ya, 'the before model'], [after, yb, 'the after model']] as const) {
      const problem = ys.map((y) => nonFiniteSummary(y.dataSync())).find((p) => p !== null);
      if (problem) {
        tf.dispose([...ya, ...yb]);
        checkFiniteActivations(model, x, which, this.inputs);
        throw new UserError(`${which}: its output holds ${problem} on ${this.inputs}; the preprocessing (--scale, --offset, --standardize) is probably wrong`);
      }
    }
    for (let o = 0; o < ya.length; o++) {
      const diff = tf.tidy(() => tf.abs(tf.sub(ya[o], yb[o])));
      this.maxAbs = Math.max(this.maxAbs, diff.max().dataSync()[0]);
      this.sumAbs += diff.sum().dataSync()[0];
      this.count += diff.size;
      diff.dispose();
    }
    const n = x.shape[0];
    const pa = top1(ya[0], n);
    const pb = top1(yb[0], n);
    for (let i = 0; i < n; i++) {
      this.examples++;
      if (pa[i] === pb[i]) this.agree++;
      const label = labels?.[i];
      if (label !== null && label !== undefined) {
        this.labeled++;
        if (pa[i] === label) this.correctBefore++;
        if (pb[i] === label) this.correctAfter++;
      }
    }
    tf.dispose([...ya, ...yb]);
  }

  result(randomInputs: boolean): Agreement {
    return {
      examples: this.examples,
      agreement: this.examples ? this.agree / this.examples : 0,
      maxAbsDiff: this.maxAbs,
      meanAbsDiff: this.count ? this.sumAbs / this.count : 0,
      accuracyBefore: this.labeled ? this.correctBefore / this.labeled : null,
      accuracyAfter: this.labeled ? this.correctAfter / this.labeled : null,
      labeled: this.labeled,
      randomInputs,
    };
  }
}

/** Agreement and accuracy over the user's images, streamed in batches; `predict` runs the models (default: here). */
export async function compareOnImages(
  before: tf.LayersModel, after: tf.LayersModel, entries: ImageEntry[], pixels: PixelOptions, batch: number, stats: BatchStats,
  predict: PairPredict = predictHere(before, after),
): Promise<Agreement> {
  const size = modelImageSize(before, 'model');
  const counter = new AgreementCounter('these images');
  for await (const b of imageBatches(entries, size, batch, pixels, stats)) {
    try {
      await counter.add(b.x, b.labels, before, after, predict);
    } finally {
      b.x.dispose();
    }
  }
  if (counter.examples === 0) throw new UserError('no readable image in the folder; give PNG or JPEG files');
  return counter.result(false);
}

/** Agreement on a fixed-seed random batch, when no images are given; `predict` runs the models (default: here). */
export async function compareOnRandom(
  before: tf.LayersModel, after: tf.LayersModel, examples = 64, predict: PairPredict = predictHere(before, after),
): Promise<Agreement> {
  const counter = new AgreementCounter('random inputs');
  const x = randomInput(before.inputs[0].shape, examples, 7);
  try {
    await counter.add(x, null, before, after, predict);
  } finally {
    x.dispose();
  }
  return counter.result(true);
}

// ---- per-layer timing ------------------------------------------------------------------------------

/** One of A's conv layers beside the layers of B that stand for it, timed inside the model runs. */
export interface BlockTiming extends Ratio {
  /** The original layer's name. */
  name: string;
  /** Time spent in the layer (before) and in its replacement block (after) per typical model run. */
  beforeMs: number;
  afterMs: number;
  /** Share of the model's time in these runs, and of its MACs. */
  beforeTimeShare: number;
  afterTimeShare: number;
  beforeMacShare: number;
  afterMacShare: number;
  /** Layers of B that replace it (itself when unchanged). */
  afterLayers: string[];
  /**
   * B runs the same layer (same name, same MACs): any time difference is the measurement's or the
   * neighbouring layers' (caches, memory), not a speedup of this layer.
   */
  unchanged: boolean;
}

/** Fixed cost per model run that does not grow with the work: the reason batch 1 gains little. */
export interface Overhead {
  /** Model time of the typical runs. */
  modelMs: number;
  /** Time outside every layer's own computation (the framework's bookkeeping, read-back). */
  outsideMs: number;
  /** Layer calls per run. */
  layers: number;
  /** Time of the cheapest layer call: the least any layer costs, however little it computes. */
  cheapestLayerMs: number;
  /** outsideMs + layers × cheapestLayerMs. */
  fixedMs: number;
}

export interface LayerTiming {
  batch: number;
  runs: number;
  blocks: BlockTiming[];
  /** Everything the blocks leave out: the other layers (activations, pooling, flatten, dense, softmax), bookkeeping, read-back. */
  other: Ratio & { beforeMs: number; afterMs: number };
  /** Model time of the typical runs, which blocks + other add up to. */
  beforeMs: number;
  afterMs: number;
  overhead: { before: Overhead; after: Overhead };
}


/**
 * B's layers that stand for A's layer `name`: as B's record of what replaced what says (written by
 * compress), else — for models written elsewhere — the same name, or the pieces a registered
 * scheme names after it (schemes/index.ts, `pieceSuffixes`), in model order.
 */
function blockOf(name: string, after: LayerInfo[], replaced: Map<string, string[]> | null = null): LayerInfo[] {
  const recorded = replaced?.get(name);
  if (recorded) return recorded.map((n) => after.find((l) => l.name === n)).filter((l): l is LayerInfo => l !== undefined);
  const same = after.find((l) => l.name === name);
  if (same) return [same];
  const suffixes = pieceSuffixes();
  return after.filter((l) => suffixes.some((s) => l.name === name + s));
}

/**
 * Records the time spent inside each layer's call() during a model run. Kernels run synchronously
 * on the cpu, wasm and tfjs-node backends, so the wall time inside call() is the layer's own work,
 * measured where it really runs: inside the model, on the previous layer's fresh output.
 */
class LayerClock {
  /** Per run: milliseconds spent in each layer (summed over a shared layer's calls). */
  readonly runs: Map<tf.layers.Layer, number>[] = [];
  private current = new Map<tf.layers.Layer, number>();
  private readonly restore: (() => void)[] = [];

  constructor(layers: LayerInfo[]) {
    for (const { layer } of layers) {
      const original = layer.call;
      const clock = this;
      layer.call = function (this: tf.layers.Layer, ...args: Parameters<typeof original>) {
        const start = performance.now();
        const out = original.apply(this, args);
        clock.current.set(layer, (clock.current.get(layer) ?? 0) + performance.now() - start);
        return out;
      };
      this.restore.push(() => (layer.call = original));
    }
  }

  predict(model: tf.LayersModel, x: tf.Tensor): tf.Tensor | tf.Tensor[] {
    this.current = new Map();
    const out = model.predict(x);
    this.runs.push(this.current);
    return out;
  }

  /** Puts every layer's own call() back. */
  stop(): void {
    this.restore.forEach((f) => f());
  }
}

/** Per-run time of `layers` in each of the last `n` recorded runs. */
function perRun(clock: LayerClock, n: number, layers: LayerInfo[]): number[] {
  return clock.runs.slice(-n).map((run) => layers.reduce((s, l) => s + (run.get(l.layer) ?? 0), 0));
}

/**
 * The runs whose model time lies between its quartiles. Per-layer times are means over these: a
 * median per row would not add up (a busy machine's stalls land in a different row each run), and
 * a plain mean would let those stalls in.
 */
function typicalRuns(totals: number[]): number[] {
  const lo = quantile(totals, 0.25);
  const hi = quantile(totals, 0.75);
  return totals.flatMap((t, i) => (t >= lo && t <= hi ? [i] : []));
}

function meanOver(values: number[], runs: number[]): number {
  return runs.reduce((s, i) => s + values[i], 0) / runs.length;
}

function overheadOf(clock: LayerClock, layers: LayerInfo[], totals: number[], typical: number[]): Overhead {
  const inLayers = perRun(clock, totals.length, layers);
  const outsideMs = meanOver(totals.map((t, i) => t - inLayers[i]), typical);
  const callsOf = (l: LayerInfo) => Math.max(1, l.calls.length);
  const calls = layers.reduce((s, l) => s + callsOf(l), 0);
  const perCall = layers.map((l) => meanOver(perRun(clock, totals.length, [l]), typical) / callsOf(l));
  const cheapestLayerMs = Math.min(...perCall.filter((ms) => ms > 0));
  return { modelMs: meanOver(totals, typical), outsideMs, layers: calls, cheapestLayerMs, fixedMs: outsideMs + calls * cheapestLayerMs };
}

/**
 * Time of each of A's conv layers and of its replacement in B, measured inside interleaved runs of
 * the whole models; "other" is the rest of each run, so the rows add up to the model time. Speedups
 * are paired per run (median and interval); times are means over the typical runs.
 */
export async function timeLayers(
  before: tf.LayersModel, after: tf.LayersModel, batch: number, runs: number, warmup: number, replaced: Map<string, string[]> | null = null,
  reporter: Reporter = silentReporter,
): Promise<LayerTiming> {
  const a = listLayers(before);
  const b = listLayers(after);
  const clockA = new LayerClock(a);
  const clockB = new LayerClock(b);
  let t: { a: number[]; b: number[] };
  try {
    const x = randomInput(before.inputs[0].shape, batch);
    const phase = reporter.phase(`timing layers inside the model runs at batch ${batch}`, warmup + Math.max(runs, MIN_RUNS), 'runs');
    t = await timePair(timerOf(() => clockA.predict(before, x)), timerOf(() => clockB.predict(after, x)), runs, warmup, pairCounter(phase));
    phase.finish();
    x.dispose();
  } finally {
    clockA.stop();
    clockB.stop();
  }
  const n = t.a.length;
  const typical = { a: typicalRuns(t.a), b: typicalRuns(t.b) };
  const beforeMs = meanOver(t.a, typical.a);
  const afterMs = meanOver(t.b, typical.b);
  const macsA = a.reduce((s, l) => s + (layerMacs(l) ?? 0), 0);
  const macsB = b.reduce((s, l) => s + (layerMacs(l) ?? 0), 0);
  const blocks: BlockTiming[] = [];
  const inBlocks = { a: t.a.map(() => 0), b: t.b.map(() => 0) };
  for (const layer of a.filter((l) => CONV_CLASSES.has(l.className))) {
    const block = blockOf(layer.name, b, replaced);
    if (!block.length) continue; // no counterpart in B: its time stays in "other"
    const ta = perRun(clockA, n, [layer]);
    const tb = perRun(clockB, n, block);
    ta.forEach((v, i) => (inBlocks.a[i] += v));
    tb.forEach((v, i) => (inBlocks.b[i] += v));
    const layerBefore = meanOver(ta, typical.a);
    const layerAfter = meanOver(tb, typical.b);
    blocks.push({
      name: layer.name,
      beforeMs: layerBefore,
      afterMs: layerAfter,
      beforeTimeShare: layerBefore / beforeMs,
      afterTimeShare: layerAfter / afterMs,
      beforeMacShare: (layerMacs(layer) ?? 0) / macsA,
      afterMacShare: block.reduce((s, l) => s + (layerMacs(l) ?? 0), 0) / macsB,
      afterLayers: block.map((l) => l.name),
      unchanged: block.length === 1 && block[0].name === layer.name && layerMacs(block[0]) === layerMacs(layer),
      ...pairedRatio(ta, tb),
    });
  }
  const otherA = t.a.map((v, i) => v - inBlocks.a[i]);
  const otherB = t.b.map((v, i) => v - inBlocks.b[i]);
  return {
    batch,
    runs: n,
    blocks,
    other: { beforeMs: meanOver(otherA, typical.a), afterMs: meanOver(otherB, typical.b), ...pairedRatio(otherA, otherB) },
    beforeMs,
    afterMs,
    overhead: { before: overheadOf(clockA, a, t.a, typical.a), after: overheadOf(clockB, b, t.b, typical.b) },
  };
}

/** One model's times inside rounds of interleaved runs with other models (see `timeModelsByLayer`). */
export interface ClockedModel {
  /** Model time, mean over the runs whose model time lies between its quartiles. */
  modelMs: number;
  /** Time inside each layer's call(), by layer name, mean over the same runs. */
  layerMs: Map<string, number>;
  runs: number;
}

/**
 * Several models on one input at batch `batch`, timed round after round (at least MIN_RUNS rounds,
 * and more until all the timed runs together took `minMs`), every layer's call() clocked inside the
 * model runs as in `timeLayers`: each layer's time where it really runs.
 */
export async function timeModelsByLayer(
  models: tf.LayersModel[], batch: number, warmup: number, minMs: number, reporter: Reporter = silentReporter,
): Promise<ClockedModel[]> {
  const layers = models.map((m) => listLayers(m));
  const clocks = layers.map((l) => new LayerClock(l));
  let times: number[][];
  try {
    const x = randomInput(models[0].inputs[0].shape, batch);
    const phase = reporter.phase(`timing ${models.length} models layer by layer at batch ${batch}`, warmup + MIN_RUNS, 'rounds');
    let done = 0;
    const enough = (t: number[][]) => t[0].length >= MIN_RUNS && sum(t.map(sum)) >= minMs;
    times = await timeRounds(models.map((m, k) => timerOf(() => clocks[k].predict(m, x))), warmup, enough, () => phase.update(Math.min(++done, warmup + MIN_RUNS)));
    phase.finish(`${times[0].length} rounds, ${(sum(times.map(sum)) / 1000).toFixed(1)} s timed`);
    x.dispose();
  } finally {
    clocks.forEach((c) => c.stop());
  }
  return times.map((totals, k) => {
    const typical = typicalRuns(totals);
    const layerMs = new Map(layers[k].map((l) => [l.name, meanOver(perRun(clocks[k], totals.length, [l]), typical)]));
    return { modelMs: meanOver(totals, typical), layerMs, runs: totals.length };
  });
}
