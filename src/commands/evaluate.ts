/**
 * One model on a folder of images: top-1 accuracy, per-class accuracy and the confusion matrix
 * for labelled images, the prediction distribution for all of them. Images are streamed in
 * batches, so memory follows the batch size, not the folder.
 */
import * as tf from '@tensorflow/tfjs';
import { UserError } from '../errors.js';
import { firstOutput, top1 } from '../model/outputs.js';
import { imageBatches, inputSizeOf, type BatchStats, type ImageEntry, type PixelOptions } from '../data/images.js';

export interface ClassAccuracy {
  name: string;
  images: number;
  correct: number;
  accuracy: number | null;
}

export interface Confusion {
  /** True class name, predicted class name, images. */
  true: string;
  predicted: string;
  count: number;
}

export interface Evaluation {
  /** Images predicted, and of those with a label. */
  images: number;
  labeled: number;
  /** Size of the model's (first) output: the classes it can predict. */
  outputs: number;
  /** Class names in output order (from folders, --labels or metadata.json). */
  classes: string[];
  /** Top-1 accuracy over the labelled images, or null when none is labelled. */
  accuracy: number | null;
  correct: number;
  /** Accuracy of always answering the most frequent true class. */
  chance: number | null;
  perClass: ClassAccuracy[];
  /** counts[true class][predicted output]: one row per class, one column per output. */
  confusion: number[][];
  /** Off-diagonal cells of `confusion`, largest first. */
  topConfusions: Confusion[];
  /** Images (labelled or not) predicted as each output. */
  predicted: number[];
}

/** A name for output `index`: its class, or its number when the model has more outputs than classes. */
export function outputName(classes: string[], index: number): string {
  return classes[index] ?? `output ${index}`;
}

/** Values in the model's (first) output per image: the classes it can predict. */
export function outputSize(model: tf.LayersModel): number {
  return model.outputs[0].shape.slice(1).reduce((a: number, b) => a * (b ?? 1), 1);
}

export async function evaluateModel(
  model: tf.LayersModel, entries: ImageEntry[], classes: string[], pixels: PixelOptions, batch: number, stats: BatchStats,
): Promise<Evaluation> {
  const size = inputSizeOf(model.inputs[0].shape, 'model');
  const outputs = outputSize(model);
  const confusion = classes.map(() => new Array<number>(outputs).fill(0));
  const predicted = new Array<number>(outputs).fill(0);
  let images = 0;
  for await (const b of imageBatches(entries, size, batch, pixels, stats)) {
    const classOf = tf.tidy(() => top1(firstOutput(model, b.x), b.x.shape[0]));
    tf.dispose(b.x);
    classOf.forEach((p, i) => {
      predicted[p]++;
      const label = b.labels[i];
      if (label !== null) confusion[label][p]++;
    });
    images += classOf.length;
  }
  if (images === 0) throw new UserError('no readable image in the folder; give PNG or JPEG files');

  const perClass = classes.map((name, c) => {
    const total = confusion[c].reduce((a, v) => a + v, 0);
    const correct = confusion[c][c] ?? 0;
    return { name, images: total, correct, accuracy: total ? correct / total : null };
  });
  const labeled = perClass.reduce((a, c) => a + c.images, 0);
  const correct = perClass.reduce((a, c) => a + c.correct, 0);
  const topConfusions: Confusion[] = [];
  confusion.forEach((row, t) => row.forEach((count, p) => {
    if (p !== t && count > 0) topConfusions.push({ true: classes[t], predicted: outputName(classes, p), count });
  }));
  topConfusions.sort((a, b) => b.count - a.count);
  return {
    images,
    labeled,
    outputs,
    classes,
    accuracy: labeled ? correct / labeled : null,
    correct,
    chance: labeled ? Math.max(...perClass.map((c) => c.images)) / labeled : null,
    perClass,
    confusion,
    topConfusions,
    predicted,
  };
}

/**
 * True when accuracy is within a fifth of the way from chance to 100 %: a sign that the pixels
 * or the class order differ from the model's training, rather than a weak model.
 */
export function nearChance(e: Evaluation): boolean {
  return e.accuracy !== null && e.chance !== null && e.accuracy < e.chance + (1 - e.chance) / 5;
}
