/**
 * Running a model one segment at a time. The model is flattened into its layer calls (models nested
 * in it inlined), and for every batch of images the tensors that cross the current cut — the
 * frontier — are kept between requests, so that asking for the input of the next layer runs only
 * the calls in between. Data reconstruction asks for the inputs of the replaced layers in network
 * order, so a whole fit costs about one pass of each network instead of one per layer.
 *
 * The kept tensors live within a byte budget: a batch whose new frontier does not fit keeps its
 * older one (or none: its images) and is recomputed from there on the next request. Every call runs with the layer's current weights, so a frontier recomputed after a layer
 * changed sees the change; callers change a layer only once every later request is past it.
 */
import * as tf from '@tensorflow/tfjs';
import { UserError } from '../errors.js';
import { listLayers } from '../model/layers.js';
import type { ImageStore } from '../data/store.js';
import { asPositionGrid } from './taps.js';

interface Call {
  layer: tf.layers.Layer;
  /** Tensor ids read and written. */
  inputs: number[];
  outputs: number[];
}

/** The parts of a tfjs graph node read here (not in tfjs' public typings). */
interface GraphNode {
  outboundLayer: tf.layers.Layer;
  inputTensors: tf.SymbolicTensor[];
  outputTensors: tf.SymbolicTensor[];
}

/** A model as its layer calls in an execution order, tensors named by integer ids. */
export class CallGraph {
  readonly calls: Call[] = [];
  readonly input: number;
  /** The model's first output. */
  readonly output: number;
  /** The call writing each tensor. */
  private producer = new Map<number, number>();
  /** A nested model's inner input, or its call's output, → the tensor it stands for. */
  private alias = new Map<number, number>();
  private inlined = new Set<tf.LayersModel>();

  constructor(model: tf.LayersModel) {
    if (model.inputs.length !== 1) throw new UserError('data reconstruction needs a model with a single image input');
    this.input = model.inputs[0].id;
    this.output = this.flatten(model, [this.input])[0];
  }

  private resolve(id: number): number {
    return this.alias.get(id) ?? id;
  }

  /** Appends the calls of `model` fed with tensors `inputs`; returns the ids of its outputs. */
  private flatten(model: tf.LayersModel, inputs: number[]): number[] {
    model.inputs.forEach((t, i) => {
      if (t.id !== inputs[i]) this.alias.set(t.id, inputs[i]);
    });
    // A loaded Sequential builds its graph on first use (as predict does).
    if (model instanceof tf.Sequential && !model.built) model.build();
    const byDepth = (model as any).nodesByDepth as Record<string, GraphNode[]>;
    const depths = Object.keys(byDepth).map(Number).sort((a, b) => b - a);
    for (const depth of depths) {
      for (const node of byDepth[depth]) {
        const layer = node.outboundLayer;
        if (layer.getClassName() === 'InputLayer') continue;
        const ins = node.inputTensors.map((t) => this.resolve(t.id));
        if (layer instanceof tf.LayersModel) {
          // Its inner tensors get one id each: a second call would overwrite the first.
          if (this.inlined.has(layer)) throw new UserError(`data reconstruction: the nested model ${layer.name} is called more than once, which it does not support; compress without --data`);
          this.inlined.add(layer);
          const outs = this.flatten(layer, ins);
          node.outputTensors.forEach((t, i) => this.alias.set(t.id, outs[i]));
          continue;
        }
        const outputs = node.outputTensors.map((t) => t.id);
        for (const id of outputs) this.producer.set(id, this.calls.length);
        this.calls.push({ layer, inputs: ins, outputs });
      }
    }
    return model.outputs.map((t) => this.resolve(t.id));
  }

  /** Index of the only call of `layer`. */
  callOf(layer: tf.layers.Layer): number {
    const found = this.calls.flatMap((c, i) => (c.layer === layer ? [i] : []));
    if (found.length !== 1 || this.calls[found[0]].inputs.length !== 1) {
      throw new UserError(`data reconstruction: layer ${layer.name} is called more than once or takes several inputs; leave it out of --layers`);
    }
    return found[0];
  }

  /** The tensor `layer` reads. */
  inputOf(layer: tf.layers.Layer): number {
    return this.calls[this.callOf(layer)].inputs[0];
  }

  /** Calls needed to compute `target` from the model input, as a set of indices. */
  ancestors(target: number): Set<number> {
    const out = new Set<number>();
    const stack = [target];
    while (stack.length) {
      const c = this.producer.get(stack.pop()!);
      if (c === undefined || out.has(c)) continue;
      out.add(c);
      stack.push(...this.calls[c].inputs);
    }
    return out;
  }

  /** The call writing tensor `id` (undefined for the model input). */
  producerOf(id: number): number | undefined {
    return this.producer.get(id);
  }
}

interface Stored {
  data: Float32Array;
  shape: number[];
}

/** A kept tensor: in JavaScript memory, or on the backend. */
type Kept = Stored | tf.Tensor;

/** One batch's frontier: the tensors kept and the calls already run to get them. */
interface Cut {
  values: Map<number, Kept>;
  done: Set<number>;
  bytes: number;
}

const bytesOf = (v: Kept) => (v instanceof tf.Tensor ? v.size * 4 : v.data.byteLength);

function disposeCut(cut: Cut | null): void {
  for (const v of cut?.values.values() ?? []) if (v instanceof tf.Tensor) v.dispose();
}

/**
 * The frontier of every image batch of `images` in one network, moved through `targets` (tensor
 * ids, requested in this order: a request for target k means no target before k is requested again).
 * Kept tensors stay on the backend with `onBackend` (for one batch at a time: no copies), or move
 * to JavaScript memory, which the backend's heap (never shrinking on wasm) does not hold.
 */
export class Frontier {
  private cuts: (Cut | null)[];
  private bytes = 0;
  /** For each k, the calls any of targets k, k+1, … still needs. */
  private needed: Set<number>[];

  constructor(private graph: CallGraph, private images: ImageStore, private targets: number[], private budget: number, private onBackend = false) {
    this.cuts = new Array(images.batchCount).fill(null);
    this.needed = targets.map(() => new Set<number>());
    const later = new Set<number>();
    for (let k = targets.length - 1; k >= 0; k--) {
      for (const c of graph.ancestors(targets[k])) later.add(c);
      this.needed[k] = new Set(later);
    }
  }

  /** Target k for image batch `batch` (the caller disposes it). */
  async value(k: number, batch: number): Promise<tf.Tensor> {
    const target = this.targets[k];
    const cut = this.cuts[batch];
    // Kept arrays become tensors only when a call reads them; kept tensors are cloned, so the cut
    // stays whole if the new one does not fit.
    const values = new Map<number, Kept>([...(cut?.values ?? [])].map(([id, v]) => [id, v instanceof tf.Tensor ? v.clone() : v]));
    const done = new Set(cut?.done ?? []);
    if (!cut) values.set(this.graph.input, (await this.images.batch(batch)).x);
    const tensor = (id: number): tf.Tensor => {
      const v = values.get(id)!;
      if (v instanceof tf.Tensor) return v;
      const t = tf.tensor(v.data, v.shape);
      values.set(id, t);
      return t;
    };

    // The calls to run: those the target needs that the cut has not run, in graph order.
    const plan: number[] = [];
    const visit = (id: number) => {
      if (values.has(id)) return;
      const c = this.graph.producerOf(id);
      if (c === undefined || done.has(c)) throw new Error(`frontier: tensor ${id} is neither kept nor computable`);
      if (plan.includes(c)) return;
      this.graph.calls[c].inputs.forEach(visit);
      plan.push(c);
    };
    visit(target);
    plan.sort((a, b) => a - b);

    const later = this.targets.slice(k);
    const reads = (c: number, id: number) => this.graph.calls[c].inputs.includes(id);
    const keep = (id: number, step: number) =>
      later.includes(id) || plan.slice(step).some((c) => reads(c, id)) || [...this.needed[k]].some((c) => !done.has(c) && reads(c, id));
    const drop = (id: number) => {
      const v = values.get(id);
      if (v instanceof tf.Tensor) v.dispose();
      values.delete(id);
    };
    for (const [step, c] of plan.entries()) {
      const call = this.graph.calls[c];
      // In a tidy: some layers leave intermediates behind outside one (tfjs' ReLU with a max value
      // keeps its relu before the clip: a MobileNet-v2 leaked one activation per batch and block).
      const inputs = call.inputs.map(tensor);
      const outs = tf.tidy(() => [call.layer.apply(inputs, {})].flat() as tf.Tensor[]);
      call.outputs.forEach((id, j) => values.set(id, outs[j]));
      done.add(c);
      for (const id of new Set(call.inputs)) if (!keep(id, step + 1)) drop(id);
    }

    // The new frontier: every tensor a later request may read.
    const result = tensor(target).clone();
    const next: Cut = { values: new Map(), done, bytes: 0 };
    for (const [id, v] of values) {
      if (!keep(id, plan.length)) {
        drop(id);
        continue;
      }
      const kept = v instanceof tf.Tensor && !this.onBackend ? { data: v.dataSync() as Float32Array, shape: v.shape.slice() } : v;
      if (kept !== v) drop(id);
      next.values.set(id, kept);
      next.bytes += bytesOf(kept);
    }
    const old = cut?.bytes ?? 0;
    if (this.bytes - old + next.bytes <= this.budget) {
      disposeCut(cut);
      this.cuts[batch] = next;
      this.bytes += next.bytes - old;
    } else {
      disposeCut(next);
    }
    return result;
  }

  /** Target k for image batch `batch` as a layer input over its positions (taps.ts asPositionGrid). */
  async layerInput(k: number, batch: number): Promise<tf.Tensor4D> {
    const t = await this.value(k, batch);
    const grid = asPositionGrid(t);
    t.dispose();
    return grid;
  }

  /**
   * Records `layer`'s output for image batch `batch`, which the caller computed from what it had
   * (data reconstruction: the original layer's response to the input it just received), so that
   * the next request does not run the layer again. Skipped when the batch keeps no frontier, the
   * layer already ran (then `output` is never called), or the value does not fit the budget.
   */
  supplyOutput(batch: number, layer: tf.layers.Layer, output: () => tf.Tensor): void {
    const cut = this.cuts[batch];
    const c = this.graph.callOf(layer);
    const call = this.graph.calls[c];
    if (!cut || cut.done.has(c) || call.outputs.length !== 1) return;
    const value = output();
    const kept: Kept = this.onBackend ? value : { data: value.dataSync() as Float32Array, shape: value.shape.slice() };
    if (kept !== value) value.dispose();
    if (this.bytes + bytesOf(kept) > this.budget) {
      if (kept instanceof tf.Tensor) kept.dispose();
      return;
    }
    cut.values.set(call.outputs[0], kept);
    cut.done.add(c);
    cut.bytes += bytesOf(kept);
    this.bytes += bytesOf(kept);
  }

  /** Forgets the frontier of image batch `batch` (no later request reads it). */
  release(batch: number): void {
    disposeCut(this.cuts[batch]);
    this.bytes -= this.cuts[batch]?.bytes ?? 0;
    this.cuts[batch] = null;
  }

  dispose(): void {
    this.cuts.forEach((_, b) => this.release(b));
  }
}

/**
 * A frontier of `model` through the inputs of the layers named (each called once; nested ones
 * included), in this order, then with `withOutput` through the model's first output.
 */
export function frontierThrough(
  model: tf.LayersModel, names: string[], images: ImageStore, budget: number, options: { withOutput?: boolean; onBackend?: boolean } = {},
): Frontier {
  const graph = new CallGraph(model);
  const layers = new Map(listLayers(model).map((l) => [l.name, l.layer]));
  const targets = names.map((name) => {
    const layer = layers.get(name);
    if (!layer) throw new Error(`layer ${name} is not in the model`);
    return graph.inputOf(layer);
  });
  return new Frontier(graph, images, options.withOutput ? [...targets, graph.output] : targets, budget, options.onBackend);
}
