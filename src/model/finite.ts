/**
 * NaN and Inf checks. A weight that is not finite (a damaged file, a model saved from a diverged
 * training run) and an activation that overflows (input preprocessing far from what the model was
 * trained on) are problems of the user's input: they are named by layer as user errors instead of
 * surfacing as a failed factorization, silent energy ranks or an "agreement 100 %, max |Δ| NaN".
 */
import * as tf from '@tensorflow/tfjs';
import { UserError } from '../errors.js';

/** "3 NaN values", "1 infinite value", "2 NaN and 1 infinite values", or null when all are finite. */
export function nonFiniteSummary(values: ArrayLike<number>): string | null {
  let nan = 0;
  let inf = 0;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (Number.isNaN(v)) nan++;
    else if (!Number.isFinite(v)) inf++;
  }
  if (nan + inf === 0) return null;
  const plural = nan + inf > 1 ? 's' : '';
  if (nan && inf) return `${nan} NaN and ${inf} infinite value${plural}`;
  return nan ? `${nan} NaN value${plural}` : `${inf} infinite value${plural}`;
}

/**
 * Throws when a weight holds NaN or Inf. `weightName` is the saved name, e.g. "conv2/kernel": the
 * layer is what precedes the last "/".
 */
export function checkFiniteWeight(weightName: string, values: ArrayLike<number>): void {
  const problem = nonFiniteSummary(values);
  if (!problem) return;
  const cut = weightName.lastIndexOf('/');
  const where = cut < 0 ? `weight ${weightName}` : `layer ${weightName.slice(0, cut)}: ${weightName.slice(cut + 1)}`;
  throw new UserError(`${where} has ${problem}; the model file is damaged or was saved from a diverged training run`);
}

/** Throws naming the first weight of `model` (nested models included) that holds NaN or Inf. */
export function checkFiniteWeights(model: tf.LayersModel): void {
  for (const w of model.weights) checkFiniteWeight(w.originalName, w.read().dataSync());
}

/**
 * The first top-level layer of `model` whose output on `x` holds NaN or Inf (a nested model counts
 * as one layer), with what it holds; null when every output is finite.
 */
export function firstNonFiniteLayer(model: tf.LayersModel, x: tf.Tensor): { layer: string; problem: string } | null {
  const layers = model.layers.filter((l) => l.getClassName() !== 'InputLayer');
  const outputs = layers.map((l) => {
    try {
      return [l.output].flat() as tf.SymbolicTensor[];
    } catch {
      return []; // a shared layer has no single output: a later layer's output shows the problem
    }
  });
  const probe = tf.model({ inputs: model.inputs, outputs: outputs.flat() });
  const values = [probe.predict(x)].flat() as tf.Tensor[];
  try {
    let at = 0;
    for (const [i, layer] of layers.entries()) {
      for (let k = 0; k < outputs[i].length; k++) {
        const problem = nonFiniteSummary(values[at++].dataSync());
        if (problem) return { layer: layer.name, problem };
      }
    }
    return null;
  } finally {
    tf.dispose(values);
  }
}

/**
 * Throws a user error naming the layer where `model`'s activations on `x` stop being finite
 * (`what` names the model, `inputs` what x is).
 */
export function checkFiniteActivations(model: tf.LayersModel, x: tf.Tensor, what: string, inputs = 'these images'): void {
  const found = firstNonFiniteLayer(model, x);
  if (!found) return;
  throw new UserError(
    `${what}: the output of layer ${found.layer} holds ${found.problem} on ${inputs} (an activation overflowed); the preprocessing (--scale, --offset, --standardize) is probably wrong`,
  );
}
