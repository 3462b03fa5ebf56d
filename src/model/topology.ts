/**
 * The saved Keras topology (model.json's modelTopology) as lowrank walks it: the model entry,
 * its layer entries in order, and the layers of models nested inside models.
 */
export const MODEL_CLASSES = new Set(['Sequential', 'Model', 'Functional']);

export type LayerEntry = { class_name: string; config: any; name?: string; inbound_nodes?: any[] };

/** The model entry of a topology (Keras H5 conversions wrap it in model_config). */
export function rootOf(topology: any): LayerEntry {
  return topology.model_config ?? topology;
}

export function sequentialLayers(entry: LayerEntry): LayerEntry[] {
  return Array.isArray(entry.config) ? entry.config : entry.config.layers;
}

/** Every layer entry of the topology in order, nested models' layers included. */
export function topologyLayers(topology: any): LayerEntry[] {
  const out: LayerEntry[] = [];
  const walk = (entry: LayerEntry) => {
    for (const layer of entry.class_name === 'Sequential' ? sequentialLayers(entry) : entry.config.layers) {
      out.push(layer);
      if (MODEL_CLASSES.has(layer.class_name)) walk(layer);
    }
  };
  walk(rootOf(topology));
  return out;
}

export const entryName = (layer: LayerEntry): string => layer.config?.name ?? layer.name;

