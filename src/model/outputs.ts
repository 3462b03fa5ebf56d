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
