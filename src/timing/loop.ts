/**
 * Measured speed of two models on one backend. Timing interleaves the models (A B A B …) so drift
 * hits both, a prediction counts only once its data is read back, and each speedup comes with a
 * distribution-free 95 % interval of the median paired ratio (stats.ts). Also the checks that two
 * models can be timed side by side at a batch size.
 */
import * as tf from '@tensorflow/tfjs';
import { performance } from 'node:perf_hooks';
import { UserError } from '../errors.js';
import { yieldToSignals } from '../runtime/interrupt.js';
import { listLayers, type Shape } from '../model/layers.js';
import { silentReporter, type Phase, type Reporter } from '../report/progress.js';
import { formatBytes } from '../report/format.js';
import { pairedRatio, sum, timingStats, type Ratio, type TimingStats } from './stats.js';

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
export const timerOf = (run: () => tf.Tensor | tf.Tensor[]): Timer => () => timeOnce(run);

/** A fixed-seed uniform [0,1) batch of the model's input shape. */
export function randomInput(inputShape: (number | null)[], batch: number, seed = 1): tf.Tensor {
  return tf.randomUniform([batch, ...(inputShape.slice(1) as number[])], 0, 1, 'float32', seed);
}

/**
 * Interleaved timing of several timers, round after round (every other round in reverse order, so
 * none always runs on a warmer cache) until `enough` holds for the times so far (one list per
 * timer); `onRound` after each warm-up or timed round.
 */
export async function timeRounds(timers: Timer[], warmup: number, enough: (times: number[][]) => boolean, onRound: () => void = () => {}): Promise<number[][]> {
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
export function pairCounter(phase: Phase): () => void {
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
    out.push({ batch, runs: t.a.length, before: timingStats(t.a, batch), after: timingStats(t.b, batch), ...pairedRatio(t.a, t.b) });
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
