/**
 * The Adam steps of a layer's data fit (fit.ts) spread over cores. A minibatch is cut into shards
 * whose size depends on the layer alone (`shardImages`), whatever the thread count; each shard's squared error and gradients
 * are computed on its own, and the caller sums them in shard order. With one thread the shards run
 * in the calling thread; with more, on worker threads that each hold a single-threaded wasm backend,
 * read the cached samples and the current factors from shared memory, and send back plain arrays.
 * Both compute every shard with the same code on the same wasm build, so a fixed seed gives the
 * same weights whatever the thread count.
 *
 * Why workers and not the wasm backend's own threads: a step is ~25 small convolutions (the
 * character CNN's conv2 at 32 images: 24 ms), which XNNPACK splits into too few tiles to gain
 * (1.1× on two threads, and a loss on conv3); two shards of 16 images take 13 ms each.
 */
import * as tf from '@tensorflow/tfjs';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { useBackend } from '../runtime/backend.js';
import { UserError } from '../errors.js';
import { schemeFor, type FactoredForm, type SchemeOptions, type TargetLayer } from '../schemes/index.js';
import { gatherSamples, type CachedSamples } from '../data/store.js';

/** Images per shard: small enough to split a 32-image minibatch over two cores… */
export const SHARD_IMAGES = 16;
/**
 * …but enough work to outweigh a shard's fixed costs (gathering its samples, reading back its
 * gradients, a new set of XNNPACK operators: ~1–2 ms): the character CNN's conv2 (11 M MACs per
 * image and step) and conv3 (1.9 M) get shards of 16; a layer of 0.5 M per image, shards of 50.
 */
const MIN_SHARD_MACS = 25e6;

/** Images per shard of a layer: it depends on the layer only, never on the thread count. */
export function shardImages(form: FactoredForm): number {
  // A step's forward and gradients ≈ 4 forward passes.
  return Math.max(SHARD_IMAGES, Math.ceil(MIN_SHARD_MACS / (4 * form.macsPerImage)));
}

/** A minibatch's image indices in shards of `size`. */
export function shardsOf(indices: number[], size: number): number[][] {
  const out: number[][] = [];
  for (let i = 0; i < indices.length; i += size) out.push(indices.slice(i, i + size));
  return out;
}

/** Summed over a minibatch's shards: squared error, Σ‖Y‖², rows, and the gradients of ½‖E‖². */
export interface StepSums {
  sse: number;
  yy: number;
  rows: number;
  /** One per parameter (the factors, then the offset when the layer has a bias). */
  grads: Float32Array[];
}

/**
 * The sums of each shard, from the cached samples and the parameters' current values (tensors made
 * once for all the shards: a new weight tensor costs each convolution a fresh XNNPACK operator).
 */
function shardSums(form: FactoredForm, samples: CachedSamples, shards: number[][], shapes: number[][], values: Float32Array[], hasOffset: boolean): StepSums[] {
  const params = values.map((v, i) => tf.tensor(v, shapes[i]));
  const factors = hasOffset ? params.slice(0, -1) : params;
  const offset = hasOffset ? (params[params.length - 1] as tf.Tensor1D) : null;
  try {
    return shards.map((images) => {
      const s = gatherSamples(samples, images);
      const r = form.step(s.x, factors, s.y, offset);
      const yy = tf.tidy(() => s.y.square().sum());
      const grads = [...r.grads, ...(r.offsetGrad ? [r.offsetGrad] : [])];
      const out = { sse: r.sse.dataSync()[0], yy: yy.dataSync()[0], rows: s.y.shape[0], grads: grads.map((g) => g.dataSync() as Float32Array) };
      tf.dispose([s.x, s.y, r.sse, yy, ...grads]);
      if (!Number.isFinite(out.sse) || !Number.isFinite(out.yy)) throw nonFiniteActivations();
      return out;
    });
  } finally {
    tf.dispose(params);
  }
}

/** Adds shard sums in the order given (the same order whatever computed them), into the first. */
function addInOrder(parts: StepSums[]): StepSums {
  const [total, ...rest] = parts;
  for (const p of rest) {
    total.sse += p.sse;
    total.yy += p.yy;
    total.rows += p.rows;
    p.grads.forEach((g, i) => {
      const t = total.grads[i];
      for (let j = 0; j < g.length; j++) t[j] += g[j];
    });
  }
  return total;
}

export function nonFiniteActivations(): UserError {
  return new UserError(
    'the layer\'s input or response on the fitting images holds NaN or Inf values (an activation overflowed); check the preprocessing (--scale, --offset, --standardize)',
  );
}

/** Computes a minibatch's sums from the parameter values in `values` (which it may read until it resolves). */
export interface StepRunner {
  /** The parameters, shared with the workers: the fit writes each step's values here. */
  values: Float32Array[];
  step(indices: number[]): Promise<StepSums>;
  dispose(): void;
}

/** What a worker needs to compute one layer's shards. */
interface LayerMessage {
  type: 'layer';
  recipe: SchemeOptions;
  target: TargetLayer;
  rank: number;
  samples: CachedSamples;
  shapes: number[][];
  values: Float32Array[];
  hasOffset: boolean;
}

type Reply = { id: number; sums: StepSums[] } | { id: number; error: string; user: boolean };

/** Float32 arrays of the given shapes in one shared buffer. */
function sharedArrays(shapes: number[][]): Float32Array[] {
  const sizes = shapes.map((s) => s.reduce((a, b) => a * b, 1));
  const buffer = new SharedArrayBuffer(sizes.reduce((a, b) => a + b, 0) * 4);
  let at = 0;
  return sizes.map((n) => {
    const v = new Float32Array(buffer, at * 4, n);
    at += n;
    return v;
  });
}

/** Worker threads that each hold a wasm backend: started on the first layer fitted by Adam, kept for the next ones. */
export class ShardPool {
  private workers: Worker[];
  private pending = new Map<number, { resolve(sums: StepSums[]): void; reject(error: Error): void }>();
  private nextId = 0;
  private failure: Error | null = null;

  constructor(readonly size: number) {
    this.workers = Array.from({ length: size }, () => {
      const w = new Worker(new URL(import.meta.url), { workerData: { shardWorker: true } });
      // Idle workers must not keep the process alive.
      w.unref();
      w.on('message', (reply: Reply) => this.settle(reply));
      w.on('error', (err) => this.fail(new Error(`a fit worker failed: ${err.message}`)));
      w.on('exit', (code) => this.fail(new Error(`a fit worker stopped (exit code ${code})`)));
      return w;
    });
  }

  private settle(reply: Reply): void {
    const p = this.pending.get(reply.id);
    if (!p) return;
    this.pending.delete(reply.id);
    if ('error' in reply) p.reject(reply.user ? new UserError(reply.error) : new Error(reply.error));
    else p.resolve(reply.sums);
  }

  private fail(error: Error): void {
    this.failure ??= error;
    for (const p of this.pending.values()) p.reject(error);
    this.pending.clear();
  }

  private call(worker: Worker, shards: number[][]): Promise<StepSums[]> {
    if (this.failure) return Promise.reject(this.failure);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      worker.postMessage({ type: 'step', id, shards });
    });
  }

  /** A runner for one layer: every worker gets the layer's recipe and shared arrays. */
  runner(form: FactoredForm, source: LayerSource, samples: CachedSamples, shapes: number[][], hasOffset: boolean): StepRunner {
    const values = sharedArrays(shapes);
    const message: LayerMessage = { type: 'layer', recipe: source.scheme.recipe, target: source.target, rank: source.rank, samples, shapes, values, hasOffset };
    this.workers.forEach((w) => w.postMessage(message));
    const perShard = shardImages(form);
    return {
      values,
      step: async (indices) => {
        const shards = shardsOf(indices, perShard);
        // Shard i goes to worker i mod size; results come back per worker in shard order. Workers
        // without a shard (a cheap layer's minibatch can be one shard) are not called at all.
        const busy = this.workers.slice(0, Math.min(this.size, shards.length));
        busy.forEach((w) => w.ref());
        try {
          const perWorker = await Promise.all(busy.map((w, k) => this.call(w, shards.filter((_, i) => i % this.size === k))));
          return addInOrder(shards.map((_, i) => perWorker[i % this.size][Math.floor(i / this.size)]));
        } finally {
          busy.forEach((w) => w.unref());
        }
      },
      dispose: () => this.workers.forEach((w) => w.postMessage({ type: 'release' })),
    };
  }

  get broken(): boolean {
    return this.failure !== null;
  }

  terminate(): void {
    for (const w of this.workers) {
      w.removeAllListeners('exit');
      void w.terminate();
    }
  }
}

let processPool: ShardPool | null = null;

/**
 * The process's pool of `size` workers: started on first use and kept for later fits (a sweep or a
 * rank search fits many times; idle workers do not keep the process alive), replaced when the size
 * changes or a worker failed.
 */
export function shardPool(size: number): ShardPool {
  if (processPool && (processPool.size !== size || processPool.broken)) {
    processPool.terminate();
    processPool = null;
  }
  return (processPool ??= new ShardPool(size));
}

/** Ends the process's pool (the CLI does when a command is done, so the process never waits on a worker). */
export function stopShardPool(): void {
  processPool?.terminate();
  processPool = null;
}

/** The layer a fit is for, as the workers rebuild its factored form. */
export interface LayerSource {
  scheme: { recipe: SchemeOptions };
  target: TargetLayer;
  rank: number;
}

/** The shards run one after another in the calling thread, on its backend. */
export function localRunner(form: FactoredForm, samples: CachedSamples, shapes: number[][], hasOffset: boolean): StepRunner {
  const values = shapes.map((s) => new Float32Array(s.reduce((a, b) => a * b, 1)));
  const perShard = shardImages(form);
  return {
    values,
    step: async (indices) => addInOrder(shardSums(form, samples, shardsOf(indices, perShard), shapes, values, hasOffset)),
    dispose: () => {},
  };
}

/** A fit worker: one layer at a time, steps in the order they arrive. */
function serve(): void {
  const port = parentPort!;
  let layer: (LayerMessage & { form: FactoredForm }) | null = null;
  const release = () => {
    layer?.form.dispose();
    layer = null;
  };
  let queue: Promise<unknown> = useBackend('wasm', 1);
  port.on('message', (m: LayerMessage | { type: 'release' } | { type: 'step'; id: number; shards: number[][] }) => {
    queue = queue.then(() => {
      if (m.type === 'release') return release();
      if (m.type === 'layer') {
        release();
        layer = { ...m, form: schemeFor(m.recipe).factored(m.target, m.rank) };
        return;
      }
      try {
        const l = layer!;
        const sums = shardSums(l.form, l.samples, m.shards, l.shapes, l.values, l.hasOffset);
        port.postMessage({ id: m.id, sums }, sums.flatMap((s) => s.grads.map((g) => g.buffer as ArrayBuffer)));
      } catch (err) {
        port.postMessage({ id: m.id, error: err instanceof Error ? err.message : String(err), user: err instanceof UserError });
      }
    });
  });
}

if (!isMainThread && (workerData as { shardWorker?: boolean } | null)?.shardWorker) serve();
