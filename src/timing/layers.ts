/**
 * Per-layer timing: every layer's call() clocked inside real runs of the whole model, so each layer's
 * time is where it really runs; a model's conv layers beside the layers that replace them, and the
 * fixed cost per run that does not grow with the work.
 */
import * as tf from '@tensorflow/tfjs';
import { performance } from 'node:perf_hooks';
import { layerMacs } from '../model/cost.js';
import { CONV_CLASSES, listLayers, type LayerInfo } from '../model/layers.js';
import { silentReporter, type Reporter } from '../report/progress.js';
import { pieceSuffixes } from '../schemes/index.js';
import { MIN_RUNS, pairCounter, randomInput, timePair, timeRounds, timerOf } from './loop.js';
import { pairedRatio, quantile, sum, type Ratio } from './stats.js';

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
