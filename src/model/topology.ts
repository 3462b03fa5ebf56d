/**
 * The saved Keras topology (model.json's modelTopology), typed the way tfjs-layers' keras_format
 * describes it, and walked as lowrank walks it: the model entry, its layer entries in order, and
 * the layers of models nested inside models.
 */
import type * as tf from '@tensorflow/tfjs';
import type { Shape } from './layers.js';

export const MODEL_CLASSES = new Set(['Sequential', 'Model', 'Functional']);

/** One input of a layer call: [layer name, node index, tensor index, keyword arguments]. */
export type InboundRef = [string, number, number, Record<string, unknown>?];
/** One call of a layer: the tensors it takes. */
export type InboundNode = InboundRef[];

/** A layer's saved (snake_case) config; which keys it has depends on the layer class. */
export interface KerasLayerConfig {
  name: string;
  batch_input_shape?: Shape;
  [key: string]: unknown;
}

/** One entry of a model's layer list. Functional models name each entry and list its calls. */
export interface KerasLayer {
  class_name: string;
  config: KerasLayerConfig;
  name?: string;
  inbound_nodes?: InboundNode[];
}

/** The config of a Sequential or functional model: its layers, and (functional) its inputs and outputs. */
export interface KerasModelConfig extends KerasLayerConfig {
  layers: KerasLayer[];
  input_layers?: InboundRef[];
  output_layers?: InboundRef[];
}

/** A model entry: the topology's root, or a model nested as a layer. Old Sequential saves keep a bare layer list as config. */
export interface KerasModel extends Omit<KerasLayer, 'config'> {
  config: KerasModelConfig | KerasLayer[];
}

/** modelTopology as tfjs saves it; Keras H5 conversions wrap the model in model_config. */
export type ModelTopology = (KerasModel | { model_config: KerasModel }) & {
  keras_version?: string;
  backend?: string;
};

/** A model in memory together with the topology it was loaded from (or would be saved with). */
export interface ModelSource {
  model: tf.LayersModel;
  topology: ModelTopology;
}

const isModelEntry = (layer: KerasLayer | KerasModel): layer is KerasModel => MODEL_CLASSES.has(layer.class_name);

/** The model entry of a topology. */
export function rootOf(topology: ModelTopology): KerasModel {
  return 'model_config' in topology ? topology.model_config : topology;
}

/** The layer entries of a model entry, in order. */
export function modelLayers(entry: KerasModel): KerasLayer[] {
  return Array.isArray(entry.config) ? entry.config : entry.config.layers;
}

/** Every layer entry of the topology in order, nested models' layers included. */
export function topologyLayers(topology: ModelTopology): KerasLayer[] {
  const out: KerasLayer[] = [];
  const walk = (entry: KerasModel) => {
    for (const layer of modelLayers(entry)) {
      out.push(layer);
      if (isModelEntry(layer)) walk(layer);
    }
  };
  walk(rootOf(topology));
  return out;
}

/** A layer entry as a model entry, when it is one. */
export const asModel = (layer: KerasLayer): KerasModel | null => (isModelEntry(layer) ? layer : null);

export const entryName = (layer: KerasLayer): string => layer.config?.name ?? layer.name ?? '';
