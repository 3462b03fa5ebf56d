/**
 * Whether a top-1 accuracy counted on the user's labelled images can mean anything: before
 * counting, the labels must be able to name the model's outputs; after counting, the original
 * model must do clearly better than chance on them, or the images are not prepared the way the
 * model was trained (the usual cause of a model "scoring" 17 % on its own test set).
 */
import type * as tf from '@tensorflow/tfjs';
import { UserError } from '../errors.js';
import { formatPercent } from '../report/format.js';
import type { ClassList } from './images.js';

/** The number of classes a model scores: its first output as [batch, classes] (unit axes aside), or null. */
export function classCount(model: tf.LayersModel): number | null {
  const dims = model.outputs[0].shape.slice(1);
  if (dims.some((d) => d === null) || dims.filter((d) => d !== 1).length > 1) return null;
  return (dims as number[]).reduce((a, b) => a * b, 1);
}

/**
 * Before counting accuracy on images labelled with `classes` (from `labelsFile`, or from the class
 * folders of `root`): throws when a --labels file does not list one name per model output; returns
 * why accuracy cannot mean anything (to print as a warning and leave accuracy out), or null.
 */
export function accuracyProblem(model: tf.LayersModel, classes: string[], root: string, labels?: string | ClassList): string | null {
  if (classes.length === 0) return null;
  const outputs = classCount(model);
  if (outputs === null || outputs < 2) {
    return `accuracy not counted: the model's output ${JSON.stringify(model.outputs[0].shape)} is not one score per class`;
  }
  if (labels && classes.length !== outputs) {
    throw new UserError(`${typeof labels === 'string' ? `--labels ${labels}` : labels.source}: lists ${classes.length} class names but the model has ${outputs} outputs; give one name per output, in output order`);
  }
  if (classes.length > outputs) {
    return `accuracy not counted: ${root} has ${classes.length} class folders but the model has ${outputs} outputs, so the folders are not its classes; give --labels with the model's class names in output order`;
  }
  return null;
}

/** Below this many labelled images an accuracy near chance may be bad luck. */
const MIN_LABELED = 20;

/**
 * After counting: a warning when the original model's own accuracy is near chance (below 1.5× the
 * chance rate), which points at the preprocessing or the class order rather than the model.
 */
export function chanceWarning(model: tf.LayersModel, originalAccuracy: number, labeled: number): string | null {
  const outputs = classCount(model);
  if (outputs === null || outputs < 2 || labeled < MIN_LABELED || originalAccuracy >= 1.5 / outputs) return null;
  return `the original model's top-1 accuracy on the ${labeled} labelled images is only ${formatPercent(originalAccuracy)}, near chance (${formatPercent(1 / outputs)} for ${outputs} classes): the preprocessing (--scale, --offset, --standardize) or the class order (--labels) is probably wrong`;
}
