/**
 * Taps: a function from a batch of model inputs to the inputs of chosen layers (and the model's
 * first output), built from sub-models that share the model's layers and weights — so setting a
 * replaced layer's weights in the model changes what the taps of later layers see. Layers inside
 * models nested in the model are reached by tapping the nested model's input in its parent and
 * running the nested model's own sub-model on it.
 */
import * as tf from '@tensorflow/tfjs';
import { positionGrid } from '../model/cost.js';
import { UserError } from '../errors.js';
import { listLayers } from '../model/layers.js';

export interface TapResult {
  /** Input of each requested layer, in request order, as (B, H, W, C) (see `asPositionGrid`). */
  inputs: tf.Tensor4D[];
  /** The model's first output (when requested). */
  output: tf.Tensor | null;
}

export type Tap = (x: tf.Tensor4D) => TapResult;

/** The input tensor of a layer's last call (the outer call, for a model used as a layer). */
export function callInput(layer: tf.layers.Layer): tf.SymbolicTensor {
  const nodes = (layer as any).inboundNodes as { inputTensors: tf.SymbolicTensor[] }[];
  const node = nodes[nodes.length - 1];
  if (!node || node.inputTensors.length !== 1) {
    throw new UserError(`data reconstruction: layer ${layer.name} does not take a single input`);
  }
  return node.inputTensors[0];
}

/** A layer input as (B, H, W, C) over its positions (model/cost.ts positionGrid): a Dense layer's [B, C] is [B, 1, 1, C]. */
export function asPositionGrid(t: tf.Tensor): tf.Tensor4D {
  const [h, w] = positionGrid(t.shape) as [number, number];
  return t.reshape([t.shape[0], h, w, t.shape[t.shape.length - 1]]);
}

interface Target {
  index: number;
  name: string;
  /** Nested models between this level and the layer, outermost first. */
  path: string[];
}

function build(model: tf.LayersModel, targets: Target[], withOutput: boolean): (x: tf.Tensor, out: tf.Tensor4D[]) => tf.Tensor | null {
  const symbols: tf.SymbolicTensor[] = [];
  const slot = (s: tf.SymbolicTensor) => {
    let i = symbols.indexOf(s);
    if (i < 0) i = symbols.push(s) - 1;
    return i;
  };
  const direct: { index: number; slot: number }[] = [];
  const nested = new Map<string, Target[]>();
  for (const t of targets) {
    if (t.path.length === 0) {
      direct.push({ index: t.index, slot: slot(callInput(model.getLayer(t.name))) });
    } else {
      const group = nested.get(t.path[0]) ?? [];
      group.push({ ...t, path: t.path.slice(1) });
      nested.set(t.path[0], group);
    }
  }
  const inner: { slot: number; run: ReturnType<typeof build> }[] = [];
  for (const [name, group] of nested) {
    const sub = model.getLayer(name) as tf.LayersModel;
    inner.push({ slot: slot(callInput(sub)), run: build(sub, group, false) });
  }
  const outputSlot = withOutput ? slot(model.outputs[0]) : -1;
  if (model.inputs.length !== 1) throw new UserError('data reconstruction needs a model with a single image input');
  const sub = tf.model({ inputs: model.inputs, outputs: symbols });
  return (x, out) => {
    const ys = [sub.predict(x, { batchSize: x.shape[0] })].flat() as tf.Tensor[];
    for (const d of direct) out[d.index] = asPositionGrid(ys[d.slot]);
    for (const n of inner) n.run(ys[n.slot], out);
    const result = withOutput ? ys[outputSlot].clone() : null;
    tf.dispose(ys);
    return result;
  };
}

/** A tap for the inputs of `names` (Conv2D-like layers, each called once) in `model`. */
export function makeTap(model: tf.LayersModel, names: string[], withOutput: boolean): Tap {
  const layers = listLayers(model);
  const targets: Target[] = names.map((name, index) => {
    const info = layers.find((l) => l.name === name);
    if (!info) throw new Error(`layer ${name} is not in the model`);
    return { index, name, path: info.enclosing };
  });
  const run = build(model, targets, withOutput);
  return (x) => {
    const inputs: tf.Tensor4D[] = new Array(names.length);
    const output = run(x, inputs);
    return { inputs, output };
  };
}
