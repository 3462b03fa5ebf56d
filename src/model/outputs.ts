/**
 * What lowrank reads off a model's outputs: the first output (a multi-output model is judged by its
 * first), and each example's top-1 class in it — the one definition of top-1 that held-out checks,
 * bench agreement and evaluate share.
 */
import * as tf from '@tensorflow/tfjs';

/** `model`'s first output on `x`. */
export function firstOutput(model: tf.LayersModel, x: tf.Tensor): tf.Tensor {
  return [model.predict(x)].flat()[0] as tf.Tensor;
}

/** Each example's top-1 class: the arg-max of its `n` rows flattened (batch first). */
export function top1(output: tf.Tensor, n = output.shape[0]): Int32Array {
  return tf.tidy(() => output.reshape([n, -1]).argMax(1).dataSync() as Int32Array);
}

/**
 * The share of `classes` taken by the commonest one: the agreement a model answering that class
 * for every input would reach with them (agreement near it says little about the other classes).
 */
export function commonestShare(classes: ArrayLike<number>): number {
  const counts = new Map<number, number>();
  let most = 0;
  for (let i = 0; i < classes.length; i++) {
    const n = (counts.get(classes[i]) ?? 0) + 1;
    counts.set(classes[i], n);
    most = Math.max(most, n);
  }
  return classes.length ? most / classes.length : 0;
}
