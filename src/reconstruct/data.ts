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
import { imageBatches, type BatchStats, type ImageEntry, type InputSize, type PixelOptions } from '../data/images.js';

export const IMAGE_BUDGET = 64 * 1024 * 1024;
export const DEFAULT_CACHE_BYTES = 512 * 1024 * 1024;

export interface ImageBatchData {
  x: tf.Tensor4D;
  labels: (number | null)[];
}

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
  async *batches(skip = 0): AsyncGenerator<ImageBatchData> {
    await this.load();
    const { height, width, channels } = this.size;
    let seen = 0;
    const emit = (data: Float32Array, labels: (number | null)[]): ImageBatchData | null => {
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
  /** Cached images, as (n, ...) tensors. */
  x: tf.Tensor4D | null = null;
  y: tf.Tensor2D | null = null;
  /** Images in the cache, and rows of y per image. */
  n = 0;
  rowsPerImage = 0;

  constructor(private store: ImageStore, private sample: SampleFn, private budget: number) {}

  /** Fills the cache from the first images that fit the budget; reports images done. */
  async fill(onBatch: (done: number, total: number) => void): Promise<void> {
    const xs: tf.Tensor4D[] = [];
    const ys: tf.Tensor2D[] = [];
    let bytes = 0;
    let done = 0;
    const total = this.store.count;
    for await (const b of this.store.batches()) {
      const s = this.sample(b.x);
      b.x.dispose();
      const n = s.x.shape[0];
      const per = (s.x.size + s.y.size) * 4 / n;
      const room = Math.max(0, Math.floor((this.budget - bytes) / per));
      if (room < n) {
        if (room > 0) {
          xs.push(s.x.slice(0, room));
          ys.push(s.y.slice(0, room * (s.y.shape[0] / n)));
          done += room;
        }
        tf.dispose([s.x, s.y]);
        break;
      }
      xs.push(s.x);
      ys.push(s.y);
      bytes += per * n;
      done += n;
      this.rowsPerImage = s.y.shape[0] / n;
      onBatch(done, total);
    }
    if (xs.length === 0) throw new UserError('the data reconstruction cache budget holds no image of this layer; raise it');
    this.x = xs.length === 1 ? xs[0] : tf.concat(xs, 0);
    this.y = ys.length === 1 ? ys[0] : tf.concat(ys, 0);
    if (xs.length > 1) tf.dispose([...xs, ...ys]);
    this.n = this.x.shape[0];
    this.rowsPerImage = this.y.shape[0] / this.n;
    onBatch(done, total);
  }

  /** A minibatch of cached images by index. */
  gather(indices: number[]): LayerSample {
    const [x, y] = tf.tidy(() => {
      const idx = tf.tensor1d(indices, 'int32');
      const r = this.rowsPerImage;
      const cols = this.y!.shape[1];
      return [tf.gather(this.x!, idx), tf.gather(this.y!.reshape([this.n, r * cols]), idx).reshape([indices.length * r, cols])];
    });
    return { x: x as tf.Tensor4D, y: y as tf.Tensor2D };
  }

  /** Every fitting image's samples in batches: the cached ones, then the rest recomputed. */
  async *all(batch: number): AsyncGenerator<LayerSample> {
    const r = this.rowsPerImage;
    for (let start = 0; start < this.n; start += batch) {
      const m = Math.min(batch, this.n - start);
      yield { x: this.x!.slice(start, m), y: this.y!.slice(start * r, m * r) };
    }
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
    tf.dispose([this.x!, this.y!]);
    this.x = null;
    this.y = null;
  }
}
