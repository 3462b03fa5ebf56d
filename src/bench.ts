/**
 * Measured speed and agreement of two models on one backend. Timing interleaves the models
 * (A B A B …) so drift hits both, and a prediction counts only once its data is read back.
 */
import * as tf from '@tensorflow/tfjs';
import { performance } from 'node:perf_hooks';
import { layerMacs } from './cost.js';
import { UserError } from './errors.js';
import { imageBatches, modelImageSize, type BatchStats, type ImageEntry, type PixelOptions } from './data/images.js';
import { checkFiniteActivations, nonFiniteSummary } from './model/finite.js';
import { listLayers, type LayerInfo, type Shape } from './model/layers.js';
import { silentReporter, type Phase, type Reporter } from './reconstruct/progress.js';
import { formatBytes } from './report/format.js';

export interface TimingStats {
  medianMs: number;
  p10Ms: number;
  p90Ms: number;
  imagesPerSec: number;
}

export interface BatchTiming {
  batch: number;
  before: TimingStats;
  after: TimingStats;
  /** Median of the paired per-run ratios before/after. */
  speedup: number;
}

export function quantile(values: number[], q: number): number {
  const s = [...values].sort((a, b) => a - b);
  const pos = (s.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return s[lo] + (s[hi] - s[lo]) * (pos - lo);
}

function stats(times: number[], batch: number): TimingStats {
  const median = quantile(times, 0.5);
  return { medianMs: median, p10Ms: quantile(times, 0.1), p90Ms: quantile(times, 0.9), imagesPerSec: (batch * 1000) / median };
}

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

/** A fixed-seed uniform [0,1) batch of the model's input shape. */
export function randomInput(inputShape: (number | null)[], batch: number, seed = 1): tf.Tensor {
  return tf.randomUniform([batch, ...(inputShape.slice(1) as number[])], 0, 1, 'float32', seed);
}

/** Interleaved timing of two functions on the same input; `onPair` after each warm-up or timed pair. */
export async function timePair(
  a: () => tf.Tensor | tf.Tensor[], b: () => tf.Tensor | tf.Tensor[], runs: number, warmup: number, onPair: () => void = () => {},
): Promise<{ a: number[]; b: number[] }> {
  for (let i = 0; i < warmup; i++) {
    await timeOnce(a);
    await timeOnce(b);
    onPair();
  }
  const ta: number[] = [];
  const tb: number[] = [];
  for (let i = 0; i < runs; i++) {
    // Alternate which goes first so neither always runs on a warmer cache.
    if (i % 2 === 0) {
      ta.push(await timeOnce(a));
      tb.push(await timeOnce(b));
    } else {
      tb.push(await timeOnce(b));
      ta.push(await timeOnce(a));
    }
    onPair();
  }
  return { a: ta, b: tb };
}

/** Counts warm-up and timed pairs into a progress phase. */
function pairCounter(phase: Phase): () => void {
  let done = 0;
  return () => phase.update(++done);
}

export async function timeModels(
  before: tf.LayersModel, after: tf.LayersModel, batches: number[], runs: number, warmup: number, reporter: Reporter = silentReporter,
): Promise<BatchTiming[]> {
  const out: BatchTiming[] = [];
  for (const batch of batches) {
    const x = randomInput(before.inputs[0].shape, batch);
    const phase = reporter.phase(`timing batch ${batch}`, warmup + runs, 'runs');
    const t = await timePair(() => before.predict(x) as tf.Tensor, () => after.predict(x) as tf.Tensor, runs, warmup, pairCounter(phase));
    phase.finish();
    x.dispose();
    out.push({
      batch,
      before: stats(t.a, batch),
      after: stats(t.b, batch),
      speedup: quantile(t.a.map((v, i) => v / t.b[i]), 0.5),
    });
  }
  return out;
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

  add(x: tf.Tensor, labels: (number | null)[] | null, before: tf.LayersModel, after: tf.LayersModel): void {
    const toList = (y: tf.Tensor | tf.Tensor[]) => (Array.isArray(y) ? y : [y]);
    const ya = toList(before.predict(x) as tf.Tensor | tf.Tensor[]);
    const yb = toList(after.predict(x) as tf.Tensor | tf.Tensor[]);
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
    const flat = (y: tf.Tensor) => y.reshape([n, -1]);
    const pa = tf.tidy(() => flat(ya[0]).argMax(1).dataSync() as Int32Array);
    const pb = tf.tidy(() => flat(yb[0]).argMax(1).dataSync() as Int32Array);
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

/** Agreement and accuracy over the user's images, streamed in batches. */
export async function compareOnImages(
  before: tf.LayersModel, after: tf.LayersModel, entries: ImageEntry[], pixels: PixelOptions, batch: number, stats: BatchStats,
): Promise<Agreement> {
  const size = modelImageSize(before, 'model');
  const counter = new AgreementCounter('these images');
  for await (const b of imageBatches(entries, size, batch, pixels, stats)) {
    counter.add(b.x, b.labels, before, after);
    b.x.dispose();
  }
  if (counter.examples === 0) throw new UserError('no readable image in the folder; give PNG or JPEG files');
  return counter.result(false);
}

/** Agreement on a fixed-seed random batch, when no images are given. */
export function compareOnRandom(before: tf.LayersModel, after: tf.LayersModel, examples = 64): Agreement {
  const counter = new AgreementCounter('random inputs');
  const x = randomInput(before.inputs[0].shape, examples, 7);
  counter.add(x, null, before, after);
  x.dispose();
  return counter.result(true);
}

// ---- per-layer timing ------------------------------------------------------------------------------

export interface BlockTiming {
  /** The original layer's name. */
  name: string;
  beforeMs: number;
  afterMs: number | null;
  /** Share of the model's measured time, and of its MACs. */
  beforeTimeShare: number;
  afterTimeShare: number | null;
  beforeMacShare: number;
  afterMacShare: number | null;
  /** Layers of B that replace it (itself when unchanged). */
  afterLayers: string[];
  speedup: number | null;
}

const CONV_CLASSES = new Set(['Conv2D', 'DepthwiseConv2D', 'SeparableConv2D']);
const PIECE_SUFFIXES = ['_v', '_h', '_p'];

/** B's layers that stand for A's layer `name`: the same name, or name_v/_h/_p pieces in order. */
function blockOf(name: string, after: LayerInfo[]): LayerInfo[] {
  const same = after.find((l) => l.name === name);
  if (same) return [same];
  return after.filter((l) => PIECE_SUFFIXES.some((s) => l.name === name + s));
}

/** Runs a chain of layers eagerly on one input: the block as it runs inside the model. */
function applyChain(layers: LayerInfo[], x: tf.Tensor): tf.Tensor {
  return tf.tidy(() => layers.reduce((h, l) => l.layer.apply(h) as tf.Tensor, x));
}

export async function timeLayers(
  before: tf.LayersModel, after: tf.LayersModel, batch: number, runs: number, warmup: number, modelMs: { before: number; after: number },
  reporter: Reporter = silentReporter,
): Promise<BlockTiming[]> {
  const a = listLayers(before);
  const b = listLayers(after);
  const macsA = a.reduce((s, l) => s + (layerMacs(l) ?? 0), 0);
  const macsB = b.reduce((s, l) => s + (layerMacs(l) ?? 0), 0);
  const out: BlockTiming[] = [];
  const convs = a.filter((l) => CONV_CLASSES.has(l.className) && l.calls.length === 1);
  const phase = reporter.phase(`timing ${convs.length} conv layers at batch ${batch}`, convs.length * (warmup + runs), 'runs');
  const onPair = pairCounter(phase);
  for (const layer of convs) {
    const block = blockOf(layer.name, b);
    const x = randomInput(layer.calls[0].inputShapes[0], batch, 3);
    const single = [layer];
    const t = block.length
      ? await timePair(() => applyChain(single, x), () => applyChain(block, x), runs, warmup, onPair)
      : { a: (await timePair(() => applyChain(single, x), () => applyChain(single, x), runs, warmup, onPair)).a, b: null };
    x.dispose();
    const beforeMs = quantile(t.a, 0.5);
    const afterMs = t.b ? quantile(t.b, 0.5) : null;
    const blockMacs = block.reduce((s, l) => s + (layerMacs(l) ?? 0), 0);
    out.push({
      name: layer.name,
      beforeMs,
      afterMs,
      beforeTimeShare: beforeMs / modelMs.before,
      afterTimeShare: afterMs === null ? null : afterMs / modelMs.after,
      beforeMacShare: (layerMacs(layer) ?? 0) / macsA,
      afterMacShare: block.length ? blockMacs / macsB : null,
      afterLayers: block.map((l) => l.name),
      speedup: afterMs === null ? null : quantile(t.a.map((v, i) => v / t.b![i]), 0.5),
    });
  }
  phase.finish();
  return out;
}
