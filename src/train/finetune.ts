/**
 * Fine-tuning by distillation, the optional stage after data reconstruction (`compress --finetune`):
 * the compressed network is trained end to end to reproduce the original network's outputs on the
 * fitting images. The original is the teacher, so no labels are needed.
 *
 * - Target: the teacher's pre-softmax logits when the model ends in a softmax (an Activation layer
 *   or a Dense with softmax activation), else its outputs; loss = their mean squared error,
 *   divided by the teacher's mean square so the loss is 1 for a student that outputs zeros.
 * - Trained: the new factor layers ('factors', the default) or every trainable weight ('all').
 *   Layers run in inference mode (batch norm uses its moving statistics, dropout is off).
 * - Optimizer: the stock tfjs Adam, one per weight, whose step is FINETUNE_LR × the weight's rms
 *   (so it needs no tuning per model), warmed up over the first half epoch and cosine-decayed over
 *   the planned epochs.
 * - After every epoch the held-out images (the ones the held-out evaluation uses) give the output
 *   error against the teacher and the top-1 agreement; the epoch with the lowest error is kept. If
 *   no epoch beats the layer-wise reconstruction, its weights are restored.
 * - Deterministic for a seed: minibatches come from a seeded shuffle. Memory is bounded: images
 *   are streamed from the ImageStore through a shuffle buffer of IMAGE_BUDGET bytes (all images
 *   when they fit, a full shuffle), and teacher targets are cached only while they fit TARGET_BUDGET.
 */
import * as tf from '@tensorflow/tfjs';
import { performance } from 'node:perf_hooks';
import { mulberry32, type Random } from '../random.js';
import { UserError } from '../errors.js';
import { listLayers } from '../model/layers.js';
import { IMAGE_BUDGET, type ImageStore } from '../reconstruct/data.js';
import type { ImageStores, Reporter } from '../reconstruct/index.js';
import { registerWasmGradients } from './wasm-gradients.js';

export interface FinetuneOptions {
  /** Training epochs, or 'auto' (see MAX_AUTO_EPOCHS). */
  epochs: number | 'auto';
  /** 'factors': only the new factor layers train; 'all': every trainable weight. */
  layers: 'factors' | 'all';
  /** Images per step. */
  batch: number;
  seed: number;
}

export const FINETUNE_LAYERS = ['factors', 'all'] as const;
/**
 * 'auto' epochs: at most this many (the cosine decay is planned over them), stopping once PATIENCE
 * epochs in a row have not beaten the best trained epoch (the first steps may lose to the
 * layer-wise start before they gain, so the count starts after epoch 1, not at the start).
 */
export const MAX_AUTO_EPOCHS = 10;
export const PATIENCE = 2;
/** Adam step as a fraction of each weight's rms. */
export const FINETUNE_LR = 0.03;
const TARGET_BUDGET = 64 * 1024 * 1024;

export interface FinetuneReport {
  /** Epochs run, and the one kept (0: the layer-wise reconstruction). */
  epochs: number;
  bestEpoch: number;
  /** 'data' when no epoch beat the layer-wise reconstruction on the held-out images. */
  kept: 'finetuned' | 'data';
  /** What the student was trained to reproduce. */
  target: 'logits' | 'outputs';
  trainedWeights: number;
  /** Held-out relative output error ‖s − t‖/‖t‖ and top-1 agreement with the original, before → after. */
  heldOut: { error: { data: number; finetuned: number }; agreement: { data: number; finetuned: number } };
  /** Top-1 accuracy of the kept weights on the labelled held-out images (null without labels). */
  accuracy: number | null;
  seconds: number;
}

/** Refuses, before any slow work, models tfjs cannot take gradients of. */
export function checkFinetune(model: tf.LayersModel): void {
  for (const l of listLayers(model)) {
    const d = l.config.dilationRate;
    if (d !== undefined && [d].flat().some((v: number) => v > 1)) {
      throw new UserError(`--finetune: layer ${l.name} is a dilated convolution, and tfjs has no gradient for those; compress without --finetune`);
    }
  }
}

type Logits = (x: tf.Tensor4D) => tf.Tensor2D;

/**
 * The model's pre-softmax logits as a function of its input (sharing its layers and weights), or
 * its first output when it does not end in a softmax.
 */
function logitsOf(model: tf.LayersModel): { fn: Logits; target: 'logits' | 'outputs' } {
  const last = model.outputs[0].sourceLayer as tf.layers.Layer;
  const config = last.getConfig() as Record<string, any>;
  const flat = (t: tf.Tensor) => t.reshape([t.shape[0], -1]) as tf.Tensor2D;
  if (config.activation === 'softmax' && model.outputs.length === 1) {
    const input = last.input as tf.SymbolicTensor;
    const upTo = tf.model({ inputs: model.inputs, outputs: input });
    if (last.getClassName() === 'Activation') return { fn: (x) => flat(upTo.apply(x) as tf.Tensor), target: 'logits' };
    if (last.getClassName() === 'Dense') {
      const [kernel, bias] = last.weights.map((w) => w.read());
      return {
        fn: (x) => {
          const h = upTo.apply(x) as tf.Tensor;
          const z = tf.matMul(h.reshape([-1, kernel.shape[0]]), kernel as tf.Tensor2D);
          return flat((bias ? z.add(bias) : z).reshape([h.shape[0], -1]));
        },
        target: 'logits',
      };
    }
  }
  return { fn: (x) => flat(model.apply(x) as tf.Tensor), target: 'outputs' };
}

/** The teacher's targets for a batch of images (their indices in the store). */
interface Teacher {
  targets: (x: tf.Tensor4D, indices: number[]) => tf.Tensor2D;
}

/** Teacher targets by image index, cached while they fit TARGET_BUDGET and recomputed otherwise. */
function cachedTeacher(fn: Logits, count: number): Teacher {
  let cache: Float32Array | null = null;
  let width = 0;
  const have = new Uint8Array(count);
  return {
    targets(x, indices) {
      if (cache && indices.every((i) => have[i])) {
        const out = new Float32Array(indices.length * width);
        indices.forEach((i, k) => out.set(cache!.subarray(i * width, (i + 1) * width), k * width));
        return tf.tensor2d(out, [indices.length, width]);
      }
      const t = tf.tidy(() => fn(x));
      if (width === 0) {
        width = t.shape[1];
        if (count * width * 4 <= TARGET_BUDGET) cache = new Float32Array(count * width);
      }
      if (cache) {
        const values = t.dataSync();
        indices.forEach((i, k) => {
          cache!.set(values.subarray(k * width, (k + 1) * width), i * width);
          have[i] = 1;
        });
      }
      return t;
    },
  };
}

/** Minibatches of one epoch in seeded random order, through a shuffle buffer of IMAGE_BUDGET bytes. */
async function* shuffledBatches(store: ImageStore, batch: number, random: Random): AsyncGenerator<{ x: tf.Tensor4D; indices: number[] }> {
  let rows: Float32Array[] = [];
  let indices: number[] = [];
  let shape: number[] = [];
  let bufferImages = 0;
  let seen = 0;
  function* drain(): Generator<{ x: tf.Tensor4D; indices: number[] }> {
    const order = random.shuffle(rows.map((_, i) => i));
    const per = rows[0]?.length ?? 0;
    for (let start = 0; start < order.length; start += batch) {
      const pick = order.slice(start, start + batch);
      const data = new Float32Array(pick.length * per);
      pick.forEach((r, k) => data.set(rows[r], k * per));
      yield { x: tf.tensor4d(data, [pick.length, ...shape] as [number, number, number, number]), indices: pick.map((r) => indices[r]) };
    }
    rows = [];
    indices = [];
  }
  for await (const b of store.batches()) {
    const [n, ...rest] = b.x.shape;
    shape = rest;
    const per = rest.reduce((a, c) => a * c, 1);
    bufferImages ||= Math.max(batch, Math.floor(IMAGE_BUDGET / (per * 4)));
    const data = b.x.dataSync() as Float32Array;
    b.x.dispose();
    for (let i = 0; i < n; i++) {
      rows.push(data.subarray(i * per, (i + 1) * per));
      indices.push(seen++);
    }
    if (rows.length >= bufferImages) yield* drain();
  }
  if (rows.length) yield* drain();
}

interface Evaluation {
  error: number;
  agreement: number;
  correct: number;
  labeled: number;
}

/** The student against the teacher on the held-out images. */
async function evaluate(student: Logits, teacher: Teacher, teacherTop: Int32Array, store: ImageStore): Promise<Evaluation> {
  let sse = 0;
  let tt = 0;
  let agree = 0;
  let correct = 0;
  let labeled = 0;
  let seen = 0;
  for await (const b of store.batches()) {
    const n = b.x.shape[0];
    const indices = Array.from({ length: n }, (_, i) => seen + i);
    const t = teacher.targets(b.x, indices);
    const [stats, top] = tf.tidy(() => {
      const s = student(b.x);
      return [tf.stack([s.sub(t).square().sum(), t.square().sum()]), s.argMax(1)];
    });
    const [e, m] = stats.dataSync();
    const predicted = top.dataSync();
    sse += e;
    tt += m;
    b.labels.forEach((label, i) => {
      if (predicted[i] === teacherTop[seen + i]) agree++;
      if (label === null) return;
      labeled++;
      if (predicted[i] === label) correct++;
    });
    tf.dispose([b.x, t, stats, top]);
    seen += n;
    await new Promise((resolve) => setImmediate(resolve));
  }
  return { error: Math.sqrt(sse / Math.max(tt, 1e-30)), agreement: agree / Math.max(seen, 1), correct, labeled };
}

/** The teacher's top-1 class of every held-out image. */
async function topClasses(teacher: Teacher, store: ImageStore): Promise<Int32Array> {
  const out = new Int32Array(store.count);
  let seen = 0;
  for await (const b of store.batches()) {
    const n = b.x.shape[0];
    const t = teacher.targets(b.x, Array.from({ length: n }, (_, i) => seen + i));
    out.set(tf.tidy(() => t.argMax(1).dataSync() as Int32Array), seen);
    tf.dispose([b.x, t]);
    seen += n;
  }
  return out;
}

const rms = (t: tf.Tensor) => tf.tidy(() => Math.sqrt(t.square().mean().dataSync()[0]));

/** tfjs optimizers have no schedule; Adam reads its learning rate at every step. */
function setRate(optimizer: tf.AdamOptimizer, rate: number): void {
  (optimizer as unknown as { learningRate: number }).learningRate = rate;
}

/**
 * Trains `student` (the data-reconstructed model; `factorLayers` its new layers) to reproduce
 * `teacher` on the fitting images, in place; its weights end as the best held-out epoch's.
 */
export async function finetune(
  teacher: tf.LayersModel, student: tf.LayersModel, factorLayers: string[], stores: ImageStores, options: FinetuneOptions, reporter: Reporter,
): Promise<FinetuneReport> {
  const start = performance.now();
  if (tf.getBackend() === 'wasm') registerWasmGradients();
  const teacherLogits = logitsOf(teacher);
  const studentLogits = logitsOf(student);
  const fitTeacher = cachedTeacher(teacherLogits.fn, stores.fit.count);
  const heldTeacher = cachedTeacher(teacherLogits.fn, stores.holdout.count);
  const teacherTop = await topClasses(heldTeacher, stores.holdout);

  const chosen = options.layers === 'all' ? student.layers : factorLayers.map((name) => student.getLayer(name));
  const layerWeights = chosen.map((l) => l.trainableWeights.map((w) => w.read() as tf.Variable));
  const variables = layerWeights.flat();
  if (variables.length === 0) throw new UserError('--finetune: the model has no trainable weight to fine-tune');
  // A weight that is all zeros (a fresh bias) steps relative to its layer's first weight.
  const rates = layerWeights.flatMap((ws) => ws.map((w) => FINETUNE_LR * (rms(w) || rms(ws[0]) || 1)));
  const optimizers = rates.map((r) => tf.train.adam(r));
  const snapshot = () => variables.map((v) => v.dataSync().slice() as Float32Array);

  const planned = options.epochs === 'auto' ? MAX_AUTO_EPOCHS : options.epochs;
  const stepsPerEpoch = Math.ceil(stores.fit.count / options.batch);
  const totalSteps = planned * stepsPerEpoch;
  const warmup = Math.max(1, Math.round(stepsPerEpoch / 2));
  const random = mulberry32(options.seed + 104729);

  const baseline = await evaluate(studentLogits.fn, heldTeacher, teacherTop, stores.holdout);
  let best = { epoch: 0, evaluation: baseline, weights: snapshot() };
  const progress = reporter.phase('fine-tuning', totalSteps, 'steps');
  let step = 0;
  let epochs = 0;
  let bestTrained = { epoch: 0, error: Infinity };
  let detail = `held-out agreement ${(100 * baseline.agreement).toFixed(1)}%`;
  for (let epoch = 1; epoch <= planned; epoch++) {
    let lossSum = 0;
    let lossCount = 0;
    for await (const { x, indices } of shuffledBatches(stores.fit, options.batch, random)) {
      step++;
      const schedule = Math.min(1, step / warmup) * 0.5 * (1 + Math.cos((Math.PI * (step - 1)) / totalSteps));
      const t = fitTeacher.targets(x, indices);
      const scale = tf.tidy(() => t.square().mean());
      const { value, grads } = tf.variableGrads(() => studentLogits.fn(x).sub(t).square().mean().div(scale) as tf.Scalar, variables);
      variables.forEach((v, i) => {
        setRate(optimizers[i], rates[i] * schedule);
        optimizers[i].applyGradients([{ name: v.name, tensor: grads[v.name] }]);
      });
      lossSum += value.dataSync()[0];
      lossCount++;
      tf.dispose([x, t, scale, value, ...Object.values(grads)]);
      progress.update(step, `epoch ${epoch}, loss ${(lossSum / lossCount).toFixed(4)}, ${detail}`);
      await new Promise((resolve) => setImmediate(resolve));
    }
    epochs = epoch;
    const e = await evaluate(studentLogits.fn, heldTeacher, teacherTop, stores.holdout);
    detail = `held-out agreement ${(100 * e.agreement).toFixed(1)}%`;
    if (e.error < best.evaluation.error) best = { epoch, evaluation: e, weights: snapshot() };
    if (e.error < bestTrained.error) bestTrained = { epoch, error: e.error };
    if (options.epochs === 'auto' && epoch - bestTrained.epoch >= PATIENCE) break;
  }
  progress.finish(epochs < planned ? `stopped after epoch ${epochs}: no held-out improvement for ${PATIENCE} epochs` : undefined);
  variables.forEach((v, i) => tf.tidy(() => v.assign(tf.tensor(best.weights[i], v.shape))));
  optimizers.forEach((o) => o.dispose());
  const kept = best.epoch > 0 ? 'finetuned' : 'data';
  const pct = (x: number) => `${(100 * x).toFixed(2)}%`;
  reporter.note(
    kept === 'finetuned'
      ? `fine-tuning: held-out output error ${pct(baseline.error)} → ${pct(best.evaluation.error)}, agreement with the original ${pct(baseline.agreement)} → ${pct(best.evaluation.agreement)} (epoch ${best.epoch} of ${epochs})`
      : `fine-tuning did not lower the held-out output error (${pct(baseline.error)}) in ${epochs} epochs; kept the layer-wise reconstruction`,
  );
  return {
    epochs,
    bestEpoch: best.epoch,
    kept,
    target: studentLogits.target,
    trainedWeights: variables.reduce((s, v) => s + v.size, 0),
    heldOut: {
      error: { data: baseline.error, finetuned: best.evaluation.error },
      agreement: { data: baseline.agreement, finetuned: best.evaluation.agreement },
    },
    accuracy: best.evaluation.labeled > 0 ? best.evaluation.correct / best.evaluation.labeled : null,
    seconds: (performance.now() - start) / 1000,
  };
}
