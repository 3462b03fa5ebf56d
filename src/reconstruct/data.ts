/**
 * Where the images and the per-layer samples live during data reconstruction, with memory bounded
 * by fixed budgets and not by the number of images:
 *
 *  - ImageStore decodes the images once; it keeps the decoded pixels while they fit in
 *    IMAGE_BUDGET bytes and decodes again on every later pass otherwise.
 *  - LayerCache holds, for the layer being fitted, its input in the network being fitted through
 *    (Φ̃) and its target linear response (W*Φ) for as many fitting images as fit in the cache
 *    budget (default 512 MiB; the character CNN's conv2 needs 82 KB per image). The iterative
 *    phase samples minibatches from it; passes over all fitting images (the exact solve of the last
 *    factor, the error checks) read the cached images and recompute the rest through the prefix
 *    networks batch by batch.
 */
import * as tf from '@tensorflow/tfjs';
import { UserError } from '../errors.js';
import { imageBatches, type BatchStats, type ImageBatch, type ImageEntry, type InputSize, type PixelOptions } from '../data/images.js';

export const IMAGE_BUDGET = 64 * 1024 * 1024;
export const DEFAULT_CACHE_BYTES = 512 * 1024 * 1024;

/** A list of images read in batches, decoded once and kept when small enough. */
export class ImageStore {
  private kept: { data: Float32Array; labels: (number | null)[] }[] | null = null;
  private decodedOnce = false;
  /** Readable images (known after the first pass). */
  count = 0;

  constructor(
    readonly entries: ImageEntry[],
    private size: InputSize,
    private pixels: PixelOptions,
    private batch: number,
    readonly stats: BatchStats,
  ) {}

  /** A store of the first `n` entries (decoded anew; for a sample of a large set). */
  head(n: number): ImageStore {
    return new ImageStore(this.entries.slice(0, n), this.size, this.pixels, this.batch, { skipped: [], decoded: 0 });
  }

  private get perImage(): number {
    return this.size.height * this.size.width * this.size.channels;
  }

  /** Decodes every image once (counting unreadable files) and keeps the pixels if they fit. */
  async load(): Promise<void> {
    if (this.decodedOnce) return;
    const keep = this.entries.length * this.perImage * 4 <= IMAGE_BUDGET;
    const kept: { data: Float32Array; labels: (number | null)[] }[] = [];
    for await (const b of imageBatches(this.entries, this.size, this.batch, this.pixels, this.stats)) {
      this.count += b.x.shape[0];
      if (keep) kept.push({ data: b.x.dataSync() as Float32Array, labels: b.labels });
      b.x.dispose();
    }
    this.decodedOnce = true;
    this.kept = keep ? kept : null;
  }

  /** Batches of readable images in order, starting at readable image `skip`. */
  async *batches(skip = 0): AsyncGenerator<ImageBatch> {
    await this.load();
    const { height, width, channels } = this.size;
    let seen = 0;
    const emit = (data: Float32Array, labels: (number | null)[]): ImageBatch | null => {
      const n = labels.length;
      const start = Math.max(0, skip - seen);
      seen += n;
      if (start >= n) return null;
      return {
        x: tf.tensor4d(data.subarray(start * this.perImage), [n - start, height, width, channels]),
        labels: labels.slice(start),
      };
    };
    if (this.kept) {
      for (const k of this.kept) {
        const b = emit(k.data, k.labels);
        if (b) yield b;
      }
      return;
    }
    const quiet: BatchStats = { skipped: [], decoded: 0 };
    for await (const b of imageBatches(this.entries, this.size, this.batch, this.pixels, quiet)) {
      if (seen + b.x.shape[0] <= skip) {
        seen += b.x.shape[0];
        b.x.dispose();
        continue;
      }
      const data = b.x.dataSync() as Float32Array;
      b.x.dispose();
      const out = emit(data, b.labels);
      if (out) yield out;
    }
  }
}

/** Input and target of one layer for a batch of images. */
export interface LayerSample {
  x: tf.Tensor4D;
  y: tf.Tensor2D;
}

/** Computes a layer's samples from a batch of images (the caller disposes them). */
export type SampleFn = (images: tf.Tensor4D) => LayerSample;

export class LayerCache {
  /** Cached images' inputs and targets, in JavaScript memory (a minibatch is assembled by copying). */
  private xData: Float32Array | null = null;
  private yData: Float32Array | null = null;
  private xShape: number[] = [];
  private yCols = 0;
  /** Cached images, and rows of y per image. */
  n = 0;
  rowsPerImage = 0;

  constructor(private store: ImageStore, private sample: SampleFn, private budget: number) {}

  private get xPer(): number {
    return this.xShape.reduce((a, b) => a * b, 1);
  }

  private get yPer(): number {
    return this.rowsPerImage * this.yCols;
  }

  /** Fills the cache from the first images that fit the budget; reports images done. */
  async fill(onBatch: (done: number, total: number) => void): Promise<void> {
    const xs: Float32Array[] = [];
    const ys: Float32Array[] = [];
    let bytes = 0;
    const total = this.store.count;
    for await (const b of this.store.batches()) {
      const s = this.sample(b.x);
      b.x.dispose();
      const n = s.x.shape[0];
      this.xShape = s.x.shape.slice(1);
      this.rowsPerImage = s.y.shape[0] / n;
      this.yCols = s.y.shape[1];
      const per = (this.xPer + this.yPer) * 4;
      const take = Math.min(n, Math.floor((this.budget - bytes) / per));
      if (take > 0) {
        xs.push((s.x.dataSync() as Float32Array).subarray(0, take * this.xPer));
        ys.push((s.y.dataSync() as Float32Array).subarray(0, take * this.yPer));
        bytes += take * per;
        this.n += take;
      }
      tf.dispose([s.x, s.y]);
      onBatch(this.n, total);
      if (take < n) break;
    }
    if (this.n === 0) throw new UserError('the data reconstruction cache budget holds no image of this layer; raise it');
    const join = (parts: Float32Array[], length: number) => {
      const out = new Float32Array(length);
      let at = 0;
      for (const p of parts) {
        out.set(p, at);
        at += p.length;
      }
      return out;
    };
    this.xData = join(xs, this.n * this.xPer);
    this.yData = join(ys, this.n * this.yPer);
  }

  private tensors(indices: ArrayLike<number>): LayerSample {
    const m = indices.length;
    const xPer = this.xPer;
    const yPer = this.yPer;
    const x = new Float32Array(m * xPer);
    const y = new Float32Array(m * yPer);
    for (let i = 0; i < m; i++) {
      const k = indices[i];
      x.set(this.xData!.subarray(k * xPer, (k + 1) * xPer), i * xPer);
      y.set(this.yData!.subarray(k * yPer, (k + 1) * yPer), i * yPer);
    }
    return {
      x: tf.tensor4d(x, [m, ...this.xShape] as [number, number, number, number]),
      y: tf.tensor2d(y, [m * this.rowsPerImage, this.yCols]),
    };
  }

  /** A minibatch of cached images by index. */
  gather(indices: number[]): LayerSample {
    return this.tensors(indices);
  }

  /** Mean square of the cached targets. */
  targetMeanSquare(): number {
    let s = 0;
    for (const v of this.yData!) s += v * v;
    return s / this.yData!.length;
  }

  /** Cached images [start, start + count) as tensors. */
  slice(start: number, count: number): LayerSample {
    return this.tensors(Array.from({ length: count }, (_, i) => start + i));
  }

  /** Every fitting image's samples in batches: the cached ones, then the rest recomputed. */
  async *all(batch: number): AsyncGenerator<LayerSample> {
    for (let start = 0; start < this.n; start += batch) yield this.slice(start, Math.min(batch, this.n - start));
    for await (const b of this.store.batches(this.n)) {
      const s = this.sample(b.x);
      b.x.dispose();
      yield s;
    }
  }

  get total(): number {
    return this.store.count;
  }

  dispose(): void {
    this.xData = null;
    this.yData = null;
  }
}
