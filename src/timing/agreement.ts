/**
 * Agreement of two models on the same inputs: how often their top-1 agrees, how far their outputs
 * are apart, and each one's top-1 accuracy on labelled images.
 */
import * as tf from '@tensorflow/tfjs';
import { UserError } from '../errors.js';
import { imageBatches, modelImageSize, type BatchStats, type ImageEntry, type PixelOptions } from '../data/images.js';
import { checkFiniteActivations, nonFiniteSummary } from '../model/finite.js';
import { commonestShare, top1 } from '../model/outputs.js';
import { randomInput } from './loop.js';

export interface Agreement {
  /** Examples compared. */
  examples: number;
  /** Fraction of examples whose top-1 class agrees (first output). */
  agreement: number;
  /** Share of the examples the before model gives its commonest class (what always answering it would agree on). */
  commonest: number;
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
  /** The before model's top-1 of every example. */
  beforeTop: number[] = [];
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
      this.beforeTop.push(pa[i]);
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
      commonest: commonestShare(this.beforeTop),
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
