/**
 * Where the images and the per-layer samples live during data reconstruction, with memory bounded
 * by fixed budgets and not by the number of images:
 *
 *  - ImageStore decodes the images once; it keeps their pixels as decoded (8 bits per value when
 *    sharp resized them) while they fit in IMAGE_BUDGET bytes, and decodes again on every later
 *    pass otherwise. Batches are read in order or by index (segments.ts keeps a frontier per batch).
 *  - LayerCache holds, for the layer being fitted, its input in the network being fitted through
 *    (Φ̃) and its target linear response (W*Φ) for as many fitting images as fit in the cache
 *    budget (default 512 MiB; the character CNN's conv2 needs 82 KB per image). The iterative
 *    phase samples minibatches from it; passes over all fitting images (the exact solve of the last
 *    factor, the error checks) read the cached images and ask the sample source for the rest.
 */
import * as tf from '@tensorflow/tfjs';
import { UserError } from '../errors.js';
import { decodeRaw, modelPixels, type BatchStats, type ImageBatch, type ImageEntry, type InputSize, type PixelOptions } from './images.js';

export const IMAGE_BUDGET = 64 * 1024 * 1024;
export const DEFAULT_CACHE_BYTES = 512 * 1024 * 1024;
/**
 * Tensors kept between the layers of a fit (segments.ts), both networks together, in JavaScript
 * memory. A batch whose frontier does not fit is run again from its images for every layer, which
 * on 224–299 px models costs a pass of the early layers per replaced layer: 200 images of a
 * MobileNet-v2 at its 112×112×96 stage take 0.9 GB a network.
 */
export const FRONTIER_BUDGET = 1024 * 1024 * 1024;

/** A list of images read in batches, decoded once and kept when small enough. */
export class ImageStore {
  /** The readable entries (known after the first pass). */
  private readable: ImageEntry[] = [];
  /** Their pixels before scaling, while they fit the budget. */
  private kept: (Uint8Array | Float32Array)[] | null = null;
  private decodedOnce = false;

  constructor(
    readonly entries: ImageEntry[],
    private size: InputSize,
    private pixels: PixelOptions,
    /** Images per batch. */
    readonly batchSize: number,
    readonly stats: BatchStats,
    /** Bytes of decoded pixels kept. */
    private budget = IMAGE_BUDGET,
  ) {}

  /** A store of the first `n` entries (decoded anew; for a sample of a large set). */
  head(n: number): ImageStore {
    return new ImageStore(this.entries.slice(0, n), this.size, this.pixels, this.batchSize, { skipped: [], decoded: 0 }, this.budget);
  }

  /** Readable images. */
  get count(): number {
    return this.readable.length;
  }

  get batchCount(): number {
    return Math.ceil(this.count / this.batchSize);
  }

  /** Decodes every image once (counting unreadable files; reporting files done) and keeps the pixels if they fit. */
  async load(onBatch?: (done: number, total: number) => void): Promise<void> {
    if (this.decodedOnce) return;
    let kept: (Uint8Array | Float32Array)[] | null = [];
    let bytes = 0;
    for (let start = 0; start < this.entries.length; start += this.batchSize) {
      const chunk = this.entries.slice(start, start + this.batchSize);
      const decoded = await Promise.all(chunk.map((e) => decodeRaw(e.file, this.size, this.pixels)));
      for (const [i, entry] of chunk.entries()) {
        const raw = decoded[i];
        if (!raw) {
          this.stats.skipped.push(entry.file);
          continue;
        }
        this.readable.push(entry);
        bytes += raw.byteLength;
        if (bytes > this.budget) kept = null;
        kept?.push(raw);
      }
      onBatch?.(Math.min(start + this.batchSize, this.entries.length), this.entries.length);
    }
    this.stats.decoded += this.readable.length;
    this.kept = kept;
    this.decodedOnce = true;
  }

  /** Readable images [index·batchSize, (index + 1)·batchSize) as the model's input. */
  async batch(index: number): Promise<ImageBatch> {
    await this.load();
    const { height, width, channels } = this.size;
    const per = height * width * channels;
    const from = index * this.batchSize;
    const entries = this.readable.slice(from, from + this.batchSize);
    const raws = this.kept ? this.kept.slice(from, from + entries.length) : await Promise.all(entries.map((e) => decodeRaw(e.file, this.size, this.pixels)));
    const data = new Float32Array(entries.length * per);
    raws.forEach((raw, i) => {
      if (!raw) throw new UserError(`${entries[i].file}: no longer readable as an image; keep the image folder unchanged while lowrank runs`);
      data.set(modelPixels(raw, this.pixels), i * per);
    });
    return { x: tf.tensor4d(data, [entries.length, height, width, channels]), labels: entries.map((e) => e.label) };
  }

  /** Input height, width and channels of every image. */
  get inputSize(): InputSize {
    return this.size;
  }

  /**
   * Readable images `indices` as decoded (before scaling: kept ones, or decoded again), with their
   * labels: what fine-tuning reads to augment and scale a batch at a time.
   */
  async rawImages(indices: number[]): Promise<{ raws: (Uint8Array | Float32Array)[]; labels: (number | null)[]; pixels: PixelOptions }> {
    await this.load();
    const entries = indices.map((i) => this.readable[i]);
    const raws = this.kept ? indices.map((i) => this.kept![i]) : await Promise.all(entries.map((e) => decodeRaw(e.file, this.size, this.pixels)));
    raws.forEach((raw, i) => {
      if (!raw) throw new UserError(`${entries[i].file}: no longer readable as an image; keep the image folder unchanged while lowrank runs`);
    });
    return { raws: raws as (Uint8Array | Float32Array)[], labels: entries.map((e) => e.label), pixels: this.pixels };
  }

  /** The labels of batch `index`. */
  labels(index: number): (number | null)[] {
    return this.readable.slice(index * this.batchSize, (index + 1) * this.batchSize).map((e) => e.label);
  }

  /** Batches of readable images in order, starting at readable image `skip`. */
  async *batches(skip = 0): AsyncGenerator<ImageBatch> {
    await this.load();
    // Every batch but the last is full, so image `skip` (when there is one) is in this one.
    for (let i = Math.floor(skip / this.batchSize); skip < this.count && i < this.batchCount; i++) {
      const b = await this.batch(i);
      const start = skip - i * this.batchSize;
      if (start <= 0) {
        yield b;
        continue;
      }
      const x = b.x.slice(start) as tf.Tensor4D;
      b.x.dispose();
      yield { x, labels: b.labels.slice(start) };
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

/** A layer's samples for every fitting image, in order, in batches (the caller disposes them). */
export interface SampleSource {
  /** Fitting images. */
  count: number;
  /** The samples of images `skip`, `skip` + 1, …. */
  batches(skip: number): AsyncGenerator<LayerSample>;
}

/** Samples computed by `sample` from each batch of the images. */
export function imageSamples(store: ImageStore, sample: SampleFn): SampleSource {
  return {
    get count() {
      return store.count;
    },
    async *batches(skip) {
      for await (const b of store.batches(skip)) {
        const s = sample(b.x);
        b.x.dispose();
        yield s;
      }
    },
  };
}

/** The samples of images `start`, … of a batch whose first image is `first` (disposes `s` when trimmed). */
export function fromImage(s: LayerSample, first: number, start: number): LayerSample {
  if (start <= first) return s;
  const skip = start - first;
  const rows = s.y.shape[0] / s.x.shape[0];
  const out = { x: s.x.slice(skip) as tf.Tensor4D, y: s.y.slice(skip * rows) as tf.Tensor2D };
  tf.dispose([s.x, s.y]);
  return out;
}

/**
 * Cached samples as plain arrays in shared memory, image after image: what fit workers read
 * (shards.ts) without copying the cache.
 */
export interface CachedSamples {
  x: Float32Array;
  y: Float32Array;
  /** Shape of one image's x, and its rows of y (each `yCols` wide). */
  xShape: number[];
  rowsPerImage: number;
  yCols: number;
}

/** The samples of the cached images `indices`, in that order, as tensors. */
export function gatherSamples(c: CachedSamples, indices: ArrayLike<number>): LayerSample {
  const m = indices.length;
  const xPer = c.xShape.reduce((a, b) => a * b, 1);
  const yPer = c.rowsPerImage * c.yCols;
  const x = new Float32Array(m * xPer);
  const y = new Float32Array(m * yPer);
  for (let i = 0; i < m; i++) {
    const k = indices[i];
    x.set(c.x.subarray(k * xPer, (k + 1) * xPer), i * xPer);
    y.set(c.y.subarray(k * yPer, (k + 1) * yPer), i * yPer);
  }
  return {
    x: tf.tensor4d(x, [m, ...c.xShape] as [number, number, number, number]),
    y: tf.tensor2d(y, [m * c.rowsPerImage, c.yCols]),
  };
}

export class LayerCache {
  /** The cached images' samples (null before `fill`). */
  private cached: CachedSamples | null = null;
  /** Cached images. */
  n = 0;

  constructor(private source: SampleSource, private budget: number) {}

  /** Fills the cache from the first images that fit the budget; reports images done. */
  async fill(onBatch: (done: number, total: number) => void): Promise<void> {
    const xs: Float32Array[] = [];
    const ys: Float32Array[] = [];
    let bytes = 0;
    let xShape: number[] = [];
    let rowsPerImage = 0;
    let yCols = 0;
    const total = this.source.count;
    for await (const s of this.source.batches(0)) {
      const n = s.x.shape[0];
      xShape = s.x.shape.slice(1);
      rowsPerImage = s.y.shape[0] / n;
      yCols = s.y.shape[1];
      const xPer = xShape.reduce((a, b) => a * b, 1);
      const yPer = rowsPerImage * yCols;
      const take = Math.min(n, Math.floor((this.budget - bytes) / ((xPer + yPer) * 4)));
      if (take > 0) {
        xs.push((s.x.dataSync() as Float32Array).subarray(0, take * xPer));
        ys.push((s.y.dataSync() as Float32Array).subarray(0, take * yPer));
        bytes += take * (xPer + yPer) * 4;
        this.n += take;
      }
      tf.dispose([s.x, s.y]);
      onBatch(this.n, total);
      if (take < n) break;
    }
    if (this.n === 0) throw new UserError('the data reconstruction cache budget holds no image of this layer; raise it');
    // Shared memory: fit workers read the samples where they are.
    const join = (parts: Float32Array[]) => {
      const out = new Float32Array(new SharedArrayBuffer(parts.reduce((a, p) => a + p.length, 0) * 4));
      let at = 0;
      for (const p of parts) {
        out.set(p, at);
        at += p.length;
      }
      return out;
    };
    this.cached = { x: join(xs), y: join(ys), xShape, rowsPerImage, yCols };
  }

  /** The cached images' samples (after `fill`). */
  get samples(): CachedSamples {
    return this.cached!;
  }

  /** Mean square of the cached targets. */
  targetMeanSquare(): number {
    const y = this.cached!.y;
    let s = 0;
    for (const v of y) s += v * v;
    return s / y.length;
  }

  /** Cached images [start, start + count) as tensors. */
  slice(start: number, count: number): LayerSample {
    return gatherSamples(this.cached!, Array.from({ length: count }, (_, i) => start + i));
  }

  /** Every fitting image's samples in batches: the cached ones, then the rest recomputed. */
  async *all(batch: number): AsyncGenerator<LayerSample> {
    for (let start = 0; start < this.n; start += batch) yield this.slice(start, Math.min(batch, this.n - start));
    yield* this.source.batches(this.n);
  }

  get total(): number {
    return this.source.count;
  }

  dispose(): void {
    this.cached = null;
  }
}
