/**
 * Building tfjs LayersModels from a saved topology and loading their weights from disk one tensor
 * at a time, so a large model never has a second full copy in memory.
 */
import { checkFiniteWeight } from './finite.js';
import * as tf from '@tensorflow/tfjs';
import { UserError, firstLine } from '../errors.js';
import { ShardReader, readModelFiles, shownPath, type ModelFiles } from './files.js';
import type { ModelTopology } from './topology.js';

export interface LoadedModel extends ModelFiles {
  model: tf.LayersModel;
}

/**
 * The initializers of the weighted layer classes, which a saved config may leave out (tfjs then
 * draws its default random ones, e.g. a truncated normal for every Conv2D kernel).
 */
const INITIALIZERS: Record<string, string[]> = {
  Conv1D: ['kernel_initializer', 'bias_initializer'],
  Conv2D: ['kernel_initializer', 'bias_initializer'],
  Conv2DTranspose: ['kernel_initializer', 'bias_initializer'],
  Dense: ['kernel_initializer', 'bias_initializer'],
  DepthwiseConv2D: ['depthwise_initializer', 'bias_initializer'],
  SeparableConv2D: ['depthwise_initializer', 'pointwise_initializer', 'bias_initializer'],
  BatchNormalization: ['beta_initializer', 'gamma_initializer', 'moving_mean_initializer', 'moving_variance_initializer'],
  Embedding: ['embeddings_initializer'],
};

/**
 * A copy of a topology whose layers initialise every weight to zeros, including the initializers a
 * saved config leaves out: building it is fast (no random numbers for weights that are overwritten
 * at once). Only used to construct models; what lowrank saves is always the original topology.
 */
export function zeroInitialized(topology: ModelTopology): ModelTopology {
  const copy = structuredClone(topology);
  const zeros = () => ({ class_name: 'Zeros', config: {} });
  const visit = (value: unknown) => {
    if (Array.isArray(value)) value.forEach(visit);
    else if (value && typeof value === 'object') {
      const node = value as Record<string, unknown> & { class_name?: unknown; config?: Record<string, unknown> };
      if (typeof node.class_name === 'string' && node.config && typeof node.config === 'object') {
        for (const key of INITIALIZERS[node.class_name] ?? []) node.config[key] ??= zeros();
      }
      for (const key of Object.keys(node)) {
        if (key.endsWith('_initializer') && node[key] && typeof node[key] === 'object') node[key] = zeros();
        else visit(node[key]);
      }
    }
  };
  visit(copy);
  return copy;
}

/** Builds a tfjs LayersModel from a topology (weights zero), turning tfjs' errors into one-line ones. */
export async function buildModel(topology: ModelTopology, shown: string): Promise<tf.LayersModel> {
  // Build on the cpu backend: its zeros are lazily committed pages, so a large model's
  // placeholder weights cost no memory before the real ones (on the active backend) replace them.
  const active = tf.getBackend();
  try {
    if (active !== 'cpu') await tf.setBackend('cpu');
    // tfjs types modelTopology as loose JSON; the Keras shape is ours to keep.
    return await tf.models.modelFromJSON({ modelTopology: zeroInitialized(topology) as unknown as tf.io.ModelJSON['modelTopology'] });
  } catch (err) {
    const message = firstLine(err);
    const unknown = /Unknown (layer|activation|initializer|regularizer|constraint)[^:]*: ([A-Za-z0-9_.]*[A-Za-z0-9_])/.exec(message);
    if (unknown) {
      const what = unknown[1] === 'layer' ? 'layer class' : unknown[1];
      throw new UserError(`${shown}: unknown ${what} '${unknown[2]}'; lowrank loads stock tfjs layers only (register no custom classes)`);
    }
    throw new UserError(`${shown}: cannot build the model (${message})`);
  } finally {
    if (tf.getBackend() !== active) await tf.setBackend(active);
  }
}

/** Loads the weights one at a time into the model's variables; dequantization is tfjs' own (io.decodeWeights). */
async function loadWeights(model: tf.LayersModel, files: ModelFiles, shown: string): Promise<void> {
  const variables = new Map<string, tf.LayerVariable>();
  for (const v of model.weights) variables.set(v.originalName, v);
  const mismatch = (detail: string) => new UserError(`${shown}: the weights do not match the topology (${detail})`);
  const seen = new Set<string>();
  const reader = new ShardReader(files.shards);
  try {
    for (const w of files.weights) {
      const variable = variables.get(w.spec.name);
      if (!variable) throw mismatch(`the file has a weight '${w.spec.name}' that no layer of the topology owns`);
      if (JSON.stringify(variable.shape) !== JSON.stringify(w.spec.shape)) {
        throw mismatch(`'${w.spec.name}' has shape [${w.spec.shape}] in the file but [${variable.shape}] in the topology`);
      }
      const bytes = reader.read(w.offset, w.bytes);
      // Plain float32 goes straight in; quantized weights are dequantized by tfjs itself.
      const tensor = !w.spec.quantization
        ? tf.tensor(new Float32Array(bytes.buffer, 0, bytes.length / 4), w.spec.shape, 'float32')
        : tf.io.decodeWeights(bytes.buffer as ArrayBuffer, [w.spec])[w.spec.name];
      try {
        checkFiniteWeight(w.spec.name, tensor.dataSync());
        variable.write(tensor);
      } finally {
        tensor.dispose();
      }
      seen.add(w.spec.name);
    }
  } finally {
    reader.close();
  }
  const missing = [...variables.keys()].filter((n) => !seen.has(n));
  if (missing.length) throw mismatch(`${missing.length} weight${missing.length > 1 ? 's' : ''} of the topology missing from the file: ${missing.slice(0, 4).join(', ')}${missing.length > 4 ? ', …' : ''}`);
}

export async function loadModel(input: string): Promise<LoadedModel> {
  const files = readModelFiles(input);
  const shown = shownPath(files.jsonPath);
  const model = await buildModel(files.topology, shown);
  await loadWeights(model, files, shown);
  return { ...files, model };
}

/** The model's Keras-style topology, as tfjs would save it (without touching the weights). */
export function modelTopology(model: tf.LayersModel): ModelTopology {
  const topology = model.toJSON(null, false) as unknown as ModelTopology;
  restoreDepthMultipliers(topology, model);
  return topology;
}

/**
 * tfjs 4.x SeparableConv2D.getConfig() omits depth_multiplier, so a saved multiplier > 1 reloads
 * as 1 and the weights no longer fit. Put it back from the live layers.
 */
function restoreDepthMultipliers(topology: ModelTopology, model: tf.LayersModel): void {
  const multipliers = new Map<string, number>();
  const collect = (m: tf.LayersModel) => {
    for (const layer of m.layers) {
      if (layer instanceof tf.LayersModel) collect(layer);
      else if (layer.getClassName() === 'SeparableConv2D') multipliers.set(layer.name, (layer as any).depthMultiplier);
    }
  };
  collect(model);
  if (multipliers.size === 0) return;
  const visit = (value: unknown) => {
    if (Array.isArray(value)) value.forEach(visit);
    else if (value && typeof value === 'object') {
      const node = value as { class_name?: unknown; config?: Record<string, unknown> & { name?: string } };
      if (node.class_name === 'SeparableConv2D' && node.config && multipliers.has(node.config.name!)) {
        node.config.depth_multiplier = multipliers.get(node.config.name!);
      }
      Object.values(value).forEach(visit);
    }
  };
  visit(topology);
}
