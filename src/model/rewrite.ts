/**
 * Graph rewrite on the saved Keras-style topology: each replaced layer's entry becomes the entries
 * of its replacement layers, chained; every consumer of the old layer (layers, merges, model
 * outputs) is rewired to the last new layer. Nothing else in the graph changes, and layers that
 * are not replaced keep their weights exactly. Works on Sequential and functional models and
 * descends into models nested inside models.
 */
import * as tf from '@tensorflow/tfjs';
import { UserError } from '../errors.js';
import { buildModel } from './io.js';
import { listLayers } from './layers.js';
import { asModel, entryName, modelLayers, rootOf, topologyLayers, type KerasLayer as Entry, type KerasModel, type ModelSource, type ModelTopology } from './topology.js';
import type { Factorization, NewLayer } from '../schemes/scheme.js';

/** A deep copy of `topology` with each layer named in `replacements` replaced by its new layers. */
export function rewriteTopology(topology: ModelTopology, replacements: Map<string, NewLayer[]>): ModelTopology {
  const copy = structuredClone(topology);
  const existing = new Set(topologyLayers(copy).map(entryName));
  for (const [name, layers] of replacements) {
    for (const l of layers) {
      if (l.config.name !== name && existing.has(l.config.name)) {
        throw new UserError(`cannot replace ${name}: the model already has a layer named ${l.config.name}`);
      }
    }
  }
  const done = new Set<string>();
  rewriteModel(rootOf(copy), replacements, done);
  for (const name of replacements.keys()) {
    if (!done.has(name)) throw new UserError(`layer ${name} was not found in the model topology`);
  }
  return copy;
}

function rewriteModel(model: KerasModel, replacements: Map<string, NewLayer[]>, done: Set<string>): void {
  if (model.class_name === 'Sequential') {
    const layers = modelLayers(model);
    const out: Entry[] = [];
    for (const [position, entry] of layers.entries()) {
      const nested = asModel(entry);
      if (nested) rewriteModel(nested, replacements, done);
      const name = entry.config?.name;
      const replacement = replacements.get(name);
      if (!replacement) {
        out.push(entry);
        continue;
      }
      done.add(name);
      replacement.forEach((l, i) => {
        const config = { ...l.config };
        // The first layer of a Sequential carries the model's input shape; on any other layer a
        // batch_input_shape is stray (tfjs warns about it), so it is not copied.
        if (position === 0 && i === 0 && entry.config.batch_input_shape) config.batch_input_shape = entry.config.batch_input_shape;
        out.push({ class_name: l.className, config });
      });
    }
    if (Array.isArray(model.config)) model.config = out;
    else model.config.layers = out;
    return;
  }

  // Functional: layers with inbound_nodes [[ [name, nodeIndex, tensorIndex, kwargs], ... ], ...].
  const config = model.config;
  if (Array.isArray(config)) throw new UserError(`model ${entryName(model as Entry)}: a ${model.class_name} config without a layer list; is the topology a tfjs LayersModel's?`);
  const renamed = new Map<string, string>();
  const out: Entry[] = [];
  for (const entry of config.layers) {
    const nested = asModel(entry);
    if (nested) rewriteModel(nested, replacements, done);
    const name = entryName(entry);
    const replacement = replacements.get(name);
    if (!replacement) {
      out.push(entry);
      continue;
    }
    if ((entry.inbound_nodes ?? []).length > 1) {
      throw new UserError(`layer ${name} is shared (called ${entry.inbound_nodes!.length} times); lowrank replaces layers that are called once`);
    }
    done.add(name);
    let previous: string | null = null;
    for (const l of replacement) {
      out.push({
        class_name: l.className,
        config: { ...l.config },
        name: l.config.name,
        inbound_nodes: previous === null ? entry.inbound_nodes : [[[previous, 0, 0, {}]]],
      });
      previous = l.config.name;
    }
    renamed.set(name, previous!);
  }
  if (renamed.size) {
    for (const entry of out) {
      for (const node of entry.inbound_nodes ?? []) {
        for (const ref of node) ref[0] = renamed.get(ref[0]) ?? ref[0];
      }
    }
    for (const ref of config.output_layers ?? []) ref[0] = renamed.get(ref[0]) ?? ref[0];
  }
  config.layers = out;
}

/**
 * Builds the rewritten model in tfjs: replaced layers get their new weights, every other layer
 * the original's weights, matched by name.
 */
export async function buildRewrittenModel(
  original: tf.LayersModel, topology: ModelTopology, replacements: Map<string, NewLayer[]>,
): Promise<tf.LayersModel> {
  const model = await buildModel(topology, 'the rewritten model');
  const originals = new Map(listLayers(original).map((l) => [l.name, l.layer]));
  const fresh = new Map<string, NewLayer>();
  for (const layers of replacements.values()) for (const l of layers) fresh.set(l.config.name, l);
  for (const info of listLayers(model)) {
    const replacement = fresh.get(info.name);
    if (replacement) {
      const tensors = replacement.weights.map((w) => tf.tensor(w.values, w.shape));
      info.layer.setWeights(tensors);
      tf.dispose(tensors);
      continue;
    }
    const source = originals.get(info.name);
    if (!source) throw new Error(`rewritten model has a layer ${info.name} that the original lacks`);
    info.layer.setWeights(source.getWeights());
  }
  return model;
}

/** The new layers of every factorization, by the name of the layer they replace. */
export function replacementLayers(factorizations: Factorization[]): Map<string, NewLayer[]> {
  return new Map(factorizations.map((f) => [f.target.name, f.scheme.layers(f)]));
}

/** The compressed model: `original`'s topology rewritten with every factorization's new layers, and the stock tfjs model it describes. */
export async function buildCompressed(original: ModelSource, factorizations: Factorization[]): Promise<ModelSource> {
  const replacements = replacementLayers(factorizations);
  const rewritten = rewriteTopology(original.topology, replacements);
  return { model: await buildRewrittenModel(original.model, rewritten, replacements), topology: rewritten };
}
