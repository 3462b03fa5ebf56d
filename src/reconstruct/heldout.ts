/**
 * Held-out evaluation of data reconstruction: the original, the filter-reconstructed and the
 * data-reconstructed models side by side on images none of them was fitted on. Per replaced layer it
 * measures ‖Y − Ŷ‖/‖Y‖, Y the original network's linear response plus bias and Ŷ the replacement's
 * inside each compressed network (all approximated layers before it in place); with labels, the
 * top-1 accuracy of the three models; with or without labels, how often each compressed model's top-1
 * agrees with the original's.
 */
import { commonestShare, firstOutput, top1 } from '../model/outputs.js';
import * as tf from '@tensorflow/tfjs';
import { performance } from 'node:perf_hooks';
import type { Factorization } from '../schemes/index.js';
import type { ImageStore } from '../data/store.js';
import { linearResponse } from '../linalg/conv-ops.js';
import type { Reporter } from '../report/progress.js';
import { frontierThrough, type Frontier } from './segments.js';

/** A compressed model and the factorizations it carries. */
export interface Variant {
  model: tf.LayersModel;
  factorizations: Factorization[];
}

export interface HeldOutReport {
  /** Per replaced layer (in the factorizations' order): relative output error of each variant. */
  layerErrors: { filter: number; data: number }[];
  /** Top-1 accuracy on the held-out images, when they are labeled. */
  accuracy: { original: number; filter: number; data: number; labeled: number } | null;
  /** Fraction of the held-out images on which each variant's top-1 is the original's; `commonest`: the share of its commonest class. */
  agreement: { filter: number; data: number; commonest: number };
  seconds: number;
}

/** Each image's top-1 output of `model`, in the store's order. */
export async function heldOutTop1(model: tf.LayersModel, images: ImageStore): Promise<Int32Array> {
  await images.load();
  const out = new Int32Array(images.count);
  let at = 0;
  for (let b = 0; b < images.batchCount; b++) {
    const { x } = await images.batch(b);
    const top = tf.tidy(() => top1(firstOutput(model, x), x.shape[0]));
    x.dispose();
    out.set(top, at);
    at += top.length;
  }
  return out;
}

/** A compressed model's held-out top-1 accuracy (with labels) and agreement with the original's top-1. */
export interface HeldOutScore {
  accuracy: { original: number; data: number; labeled: number } | null;
  agreement: { data: number; commonest: number };
}

/** The score of `predicted` against the original model's top-1 and the labels (null: none usable). */
export function scoreTop1(original: Int32Array, predicted: Int32Array, labels: (number | null)[] | null): HeldOutScore {
  let agree = 0;
  let labeled = 0;
  const correct = { original: 0, data: 0 };
  predicted.forEach((p, i) => {
    if (p === original[i]) agree++;
    const label = labels?.[i] ?? null;
    if (label === null) return;
    labeled++;
    if (original[i] === label) correct.original++;
    if (p === label) correct.data++;
  });
  return {
    accuracy: labeled > 0 ? { original: correct.original / labeled, data: correct.data / labeled, labeled } : null,
    agreement: { data: agree / Math.max(predicted.length, 1), commonest: commonestShare(original) },
  };
}

/** A variant's replacements as factored forms, ready to evaluate on their inputs. */
interface Prepared {
  forms: ReturnType<Factorization['scheme']['factored']>[];
  factors: tf.Tensor[][];
  /** b̂ − b: what data fitting added to each bias (null without bias). */
  offsets: (tf.Tensor1D | null)[];
}

function prepare(variant: Variant): Prepared {
  const fs = variant.factorizations;
  return {
    forms: fs.map((f) => f.scheme.factored(f.target, f.rank)),
    factors: fs.map((f) => f.factors.map((w) => tf.tensor(w.values, w.shape))),
    offsets: fs.map((f) => (f.bias && f.target.bias ? tf.tidy(() => tf.tensor1d(f.bias!).sub(tf.tensor1d(f.target.bias!)) as tf.Tensor1D) : null)),
  };
}

function release(p: Prepared): void {
  p.forms.forEach((f) => f.dispose());
  tf.dispose([...p.factors.flat(), ...p.offsets.filter((o): o is tf.Tensor1D => o !== null)]);
}

/** Σ over a batch of ‖Ŷ + b̂ − (Y + b)‖² for replaced layer l of one variant, on its input x. */
function layerSquaredError(p: Prepared, l: number, x: tf.Tensor4D, y: tf.Tensor2D): number {
  return tf.tidy(() => {
    let e = p.forms[l].forward(x, p.factors[l]).sub(y);
    if (p.offsets[l]) e = e.add(p.offsets[l]!);
    return e.square().sum().dataSync()[0];
  });
}

/**
 * Each network runs once over the held-out images, batch by batch, segment by segment
 * (segments.ts): a batch visits the replaced layers' inputs in order, then the output.
 */
export async function evaluateHeldOut(
  original: tf.LayersModel, filter: Variant, data: Variant, images: ImageStore, reporter: Reporter,
): Promise<HeldOutReport> {
  const start = performance.now();
  const targets = filter.factorizations.map((f) => f.target);
  const kernels = targets.map((t) => tf.tensor4d(t.kernel, [t.geometry.kh, t.geometry.kw, t.geometry.C, t.geometry.N]));
  await images.load();
  // One batch's frontier at a time, on the backend.
  const through = (model: tf.LayersModel, names: string[]) => frontierThrough(model, names, images, Number.POSITIVE_INFINITY, { withOutput: true, onBackend: true });
  const originalRun = through(original, targets.map((t) => t.name));
  const variants = { filter, data };
  const runs = (['filter', 'data'] as const).map((name) => {
    const v = variants[name];
    return { name, prepared: prepare(v), frontier: through(v.model, v.factorizations.map((f) => f.scheme.layers(f)[0].config.name)) };
  });
  const sums = { filter: targets.map(() => 0), data: targets.map(() => 0), yy: targets.map(() => 0) };
  const top = { original: new Int32Array(images.count), filter: new Int32Array(images.count), data: new Int32Array(images.count) };
  const allLabels: (number | null)[] = [];
  const progress = reporter.phase('evaluating held-out images', images.count, 'images');
  let evaluated = 0;
  for (let b = 0; b < images.batchCount; b++) {
    const labels = images.labels(b);
    const n = labels.length;
    for (const [l, t] of targets.entries()) {
      const phi = await originalRun.layerInput(l, b);
      const y = linearResponse(phi, kernels[l], t.geometry);
      phi.dispose();
      sums.yy[l] += tf.tidy(() => y.square().sum().dataSync()[0]);
      for (const run of runs) {
        const x = await run.frontier.layerInput(l, b);
        sums[run.name][l] += layerSquaredError(run.prepared, l, x, y);
        x.dispose();
      }
      y.dispose();
    }
    const top1Of = async (f: Frontier) => {
      const output = await f.value(targets.length, b);
      f.release(b);
      const top = top1(output, n);
      output.dispose();
      return top;
    };
    top.original.set(await top1Of(originalRun), evaluated);
    top.filter.set(await top1Of(runs[0].frontier), evaluated);
    top.data.set(await top1Of(runs[1].frontier), evaluated);
    allLabels.push(...labels);
    evaluated += n;
    progress.update(evaluated);
    await new Promise((resolve) => setImmediate(resolve));
  }
  progress.finish();
  tf.dispose(kernels);
  runs.forEach((r) => release(r.prepared));
  const layerErrors = targets.map((_, l) => {
    const yy = Math.max(sums.yy[l], 1e-30);
    return { filter: Math.sqrt(sums.filter[l] / yy), data: Math.sqrt(sums.data[l] / yy) };
  });
  const filterScore = scoreTop1(top.original, top.filter, allLabels);
  const dataScore = scoreTop1(top.original, top.data, allLabels);
  return {
    layerErrors,
    accuracy: dataScore.accuracy && { ...dataScore.accuracy, filter: filterScore.accuracy!.data },
    agreement: { filter: filterScore.agreement.data, data: dataScore.agreement.data, commonest: dataScore.agreement.commonest },
    seconds: (performance.now() - start) / 1000,
  };
}
