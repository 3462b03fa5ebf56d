/**
 * Held-out evaluation of data reconstruction: the original, the filter-reconstructed and the
 * data-reconstructed models side by side on images none of them was fitted on. Per replaced layer it
 * measures ‖Y − Ŷ‖/‖Y‖, Y the original network's linear response plus bias and Ŷ the replacement's
 * inside each compressed network (all approximated layers before it in place); with labels, the
 * top-1 accuracy of the three models; with or without labels, how often each compressed model's top-1
 * agrees with the original's.
 */
import * as tf from '@tensorflow/tfjs';
import { performance } from 'node:perf_hooks';
import type { Factorization } from '../schemes/index.js';
import type { ImageStore } from './data.js';
import { linearResponse } from './ops.js';
import type { Reporter } from './progress.js';
import { makeTap, type Tap } from './taps.js';

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
  /** Fraction of the held-out images on which each variant's top-1 is the original's. */
  agreement: { filter: number; data: number };
  seconds: number;
}

const top1 = (output: tf.Tensor, n: number): Int32Array => tf.tidy(() => output.reshape([n, -1]).argMax(1).dataSync() as Int32Array);

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

/** Σ over a batch of ‖Ŷ + b̂ − (Y + b)‖² for each replaced layer of one variant. */
function layerSquaredErrors(p: Prepared, inputs: tf.Tensor4D[], ys: tf.Tensor2D[]): number[] {
  return p.forms.map((form, l) => tf.tidy(() => {
    let e = form.forward(inputs[l], p.factors[l]).sub(ys[l]);
    if (p.offsets[l]) e = e.add(p.offsets[l]!);
    return e.square().sum().dataSync()[0];
  }));
}

export async function evaluateHeldOut(
  original: tf.LayersModel, filter: Variant, data: Variant, images: ImageStore, reporter: Reporter,
): Promise<HeldOutReport> {
  const start = performance.now();
  const targets = filter.factorizations.map((f) => f.target);
  const kernels = targets.map((t) => tf.tensor4d(t.kernel, [t.geometry.kh, t.geometry.kw, t.geometry.C, t.geometry.N]));
  const originalTap = makeTap(original, targets.map((t) => t.name), true);
  const taps: [Prepared, Tap][] = [filter, data].map((v) => [prepare(v), makeTap(v.model, v.factorizations.map((f) => f.scheme.layers(f)[0].config.name), true)]);
  const sums = { filter: targets.map(() => 0), data: targets.map(() => 0), yy: targets.map(() => 0) };
  const correct = { original: 0, filter: 0, data: 0 };
  const agree = { filter: 0, data: 0 };
  let labeled = 0;
  const progress = reporter.phase('evaluating held-out images', images.count, 'images');
  let evaluated = 0;
  for await (const b of images.batches()) {
    const n = b.x.shape[0];
    const orig = originalTap(b.x);
    const ys = targets.map((t, l) => linearResponse(orig.inputs[l], kernels[l], t.geometry));
    targets.forEach((_, l) => { sums.yy[l] += tf.tidy(() => ys[l].square().sum().dataSync()[0]); });
    const predictions: Record<'original' | 'filter' | 'data', Int32Array> = { original: top1(orig.output!, n), filter: new Int32Array(0), data: new Int32Array(0) };
    for (const [name, [prepared, tap]] of [['filter', taps[0]], ['data', taps[1]]] as const) {
      const comp = tap(b.x);
      layerSquaredErrors(prepared, comp.inputs, ys).forEach((s, l) => { sums[name][l] += s; });
      predictions[name] = top1(comp.output!, n);
      tf.dispose([...comp.inputs, comp.output!]);
    }
    b.labels.forEach((label, i) => {
      for (const k of ['filter', 'data'] as const) if (predictions[k][i] === predictions.original[i]) agree[k]++;
      if (label === null) return;
      labeled++;
      for (const k of ['original', 'filter', 'data'] as const) if (predictions[k][i] === label) correct[k]++;
    });
    tf.dispose([b.x, ...orig.inputs, orig.output!, ...ys]);
    evaluated += n;
    progress.update(evaluated);
    await new Promise((resolve) => setImmediate(resolve));
  }
  progress.finish();
  tf.dispose(kernels);
  taps.forEach(([p]) => release(p));
  const layerErrors = targets.map((_, l) => {
    const yy = Math.max(sums.yy[l], 1e-30);
    return { filter: Math.sqrt(sums.filter[l] / yy), data: Math.sqrt(sums.data[l] / yy) };
  });
  return {
    layerErrors,
    accuracy: labeled > 0 ? { original: correct.original / labeled, filter: correct.filter / labeled, data: correct.data / labeled, labeled } : null,
    agreement: { filter: agree.filter / Math.max(evaluated, 1), data: agree.data / Math.max(evaluated, 1) },
    seconds: (performance.now() - start) / 1000,
  };
}
