/**
 * Sample images for data reconstruction and accuracy checks: a folder read recursively, labels
 * from each image's class subfolder, decoded by sharp and resized (preprocess.ts), streamed in
 * batches so memory is bounded by the batch and not by the folder.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import sharp, { type OutputInfo } from 'sharp';
import * as tf from '@tensorflow/tfjs';
import { UserError, firstLine } from '../errors.js';
import { checkFiniteActivations } from '../model/finite.js';
import { readCappedFile } from '../model/files.js';
import { mulberry32 } from '../runtime/random.js';
import { USUALLY_QUICK, silentReporter, type Reporter } from '../report/progress.js';
import { resizeLikeTfjs, type ResizeMethod } from './preprocess.js';

export interface PixelOptions {
  /** Multiplies each 0–255 pixel (default 1/255). */
  scale: number;
  /** Added after scaling (default 0). */
  offset: number;
  /** Per image: zero mean, unit variance (replaces scale/offset). */
  standardize: boolean;
  /** How images of another size reach the model's input size (see preprocess.ts). */
  resize: ResizeMethod;
}

export const DEFAULT_PIXELS: PixelOptions = { scale: 1 / 255, offset: 0, standardize: false, resize: 'sharp' };

export interface ImageEntry {
  file: string;
  /** Class index, or null for images at the folder's top level. */
  label: number | null;
}

export interface ImageSet {
  root: string;
  entries: ImageEntry[];
  /** Class names in output order; empty when the folder has no subfolders and no --labels is given. */
  classes: string[];
}

/** What a model expects: input height, width and channels. */
export interface InputSize {
  height: number;
  width: number;
  channels: number;
}

/**
 * Collects the files under `dir` into `files` and its subfolders into `folders`. An entry that
 * cannot be followed or read (a dangling symlink, a symlink loop, no permission) is collected as a
 * file too: decoding fails on it, so it is skipped and counted like a corrupt image instead of
 * aborting the run. `ancestors` (device:inode) stops a symlink that points back up the tree.
 */
function walk(dir: string, files: string[], folders: string[], ancestors: Set<string>): void {
  let names: string[];
  try {
    names = fs.readdirSync(dir).sort();
  } catch {
    files.push(dir);
    return;
  }
  for (const name of names) {
    if (name.startsWith('.')) continue;
    const p = path.join(dir, name);
    let stat: fs.Stats;
    try {
      stat = fs.statSync(p);
    } catch {
      files.push(p);
      continue;
    }
    if (stat.isDirectory()) {
      const id = `${stat.dev}:${stat.ino}`;
      if (ancestors.has(id)) {
        files.push(p);
        continue;
      }
      folders.push(p);
      walk(p, files, folders, new Set(ancestors).add(id));
    } else if (stat.isFile()) {
      files.push(p);
    }
  }
}

/** Class names in the model's output order, and where they come from (for messages). */
export interface ClassList {
  names: string[];
  source: string;
}

/** Largest --labels file read: even 100,000 class names take a few MiB. */
const MAX_LABELS_BYTES = 16 * 1024 * 1024;

/** The class names of a --labels file, one per line; each name once (a repeated name would score as an output the model lacks). */
function readLabelsFile(labelsFile: string): ClassList {
  const fix = 'give a text file of class names, one per line';
  const text = readCappedFile(labelsFile, `--labels ${labelsFile}`, MAX_LABELS_BYTES, fix, 'a list of class names').toString('utf8');
  const names = text.split(/\r?\n/).map((s) => s.trim()).filter(Boolean);
  if (names.length === 0) throw new UserError(`--labels ${labelsFile}: the file lists no class names`);
  const twice = names.find((n, i) => names.indexOf(n) !== i);
  if (twice !== undefined) throw new UserError(`--labels ${labelsFile}: names the class '${twice}' twice; give each class once, in the model's output order`);
  return { names, source: labelsFile };
}

/**
 * Lists a folder's files (every file is a candidate: sharp decides what is an image). Labels are
 * the first subfolder under the root; classes are the sorted names of those subfolders (an empty
 * or unreadable one still takes its place in the order), or those of `labels` (a --labels file,
 * or a list such as a model's metadata.json gives).
 */
export function listImages(root: string, labels?: string | ClassList): ImageSet {
  const dir = path.resolve(root);
  if (!fs.existsSync(dir)) throw new UserError(`${root}: no such folder; give a folder of images (one subfolder per class)`);
  if (!fs.statSync(dir).isDirectory()) throw new UserError(`${root}: not a folder; give a folder of images (one subfolder per class)`);
  try {
    fs.readdirSync(dir);
  } catch (err) {
    throw new UserError(`${root}: cannot read the folder (${(err as NodeJS.ErrnoException).code ?? firstLine(err)}); give a readable folder of images`);
  }
  const files: string[] = [];
  const folders: string[] = [];
  const rootStat = fs.statSync(dir);
  walk(dir, files, folders, new Set([`${rootStat.dev}:${rootStat.ino}`]));
  if (files.length === 0) throw new UserError(`${root}: the folder holds no files; add images (PNG or JPEG)`);
  const folderOf = (file: string) => {
    const parts = path.relative(dir, file).split(path.sep);
    return parts.length > 1 ? parts[0] : null;
  };
  const list = typeof labels === 'string' ? readLabelsFile(labels) : labels;
  const classes = list ? list.names : folders.filter((f) => path.dirname(f) === dir).map((f) => path.basename(f)).sort();
  const index = new Map(classes.map((c, i) => [c, i]));
  const entries = files.map((file) => {
    const folder = folderOf(file);
    if (folder === null) return { file, label: null };
    const label = index.get(folder);
    if (label === undefined) throw new UserError(`${root}: folder '${folder}' is not a class listed in ${list!.source}; name each class folder after one of its classes`);
    return { file, label };
  });
  return { root: dir, entries, classes };
}

/** `items` in a seeded random order (a new array; same seed, same order). */
export function shuffled<T>(items: T[], seed: number): T[] {
  return mulberry32(seed).shuffle(items.slice());
}

/** Splits off a held-out fraction (at least one image each side), reproducibly. */
export function splitHoldout(entries: ImageEntry[], fraction: number, seed: number): { fit: ImageEntry[]; holdout: ImageEntry[] } {
  if (!(fraction > 0 && fraction < 1)) throw new UserError(`--holdout ${fraction}: give a fraction between 0 and 1`);
  if (entries.length < 2) throw new UserError(`only ${entries.length} image: data reconstruction needs at least 2 (some to fit, some to check)`);
  const order = shuffled(entries, seed);
  const n = Math.min(entries.length - 1, Math.max(1, Math.round(entries.length * fraction)));
  return { holdout: order.slice(0, n), fit: order.slice(n) };
}

/**
 * Decodes one image to `size` before any pixel arithmetic: 8-bit values, or floats when tfjs'
 * resize made them (see preprocess.ts); null when it is not a readable image. `modelPixels` turns
 * them into the model's input: compact to keep, exact to convert again.
 */
export async function decodeRaw(file: string, size: InputSize, pixels: PixelOptions): Promise<Uint8Array | Float32Array | null> {
  let decoded: { data: Buffer; info: OutputInfo };
  try {
    let image = sharp(file, { failOn: 'error' });
    if (pixels.resize === 'sharp') {
      const meta = await image.metadata();
      if (meta.width !== size.width || meta.height !== size.height) image = image.resize(size.width, size.height, { fit: 'fill' });
    }
    image = size.channels === 1 ? image.removeAlpha().greyscale() : image.removeAlpha().toColourspace('srgb');
    decoded = await image.raw().toBuffer({ resolveWithObject: true });
    if (decoded.info.channels !== size.channels) return null;
  } catch {
    return null;
  }
  const { info } = decoded;
  return pixels.resize !== 'sharp' && (info.width !== size.width || info.height !== size.height)
    ? resizeLikeTfjs(decoded.data, info, size, pixels.resize)
    : new Uint8Array(decoded.data);
}

/** The model's input pixels from decoded values: scale and offset, or per-image standardization. */
export function modelPixels(raw: Uint8Array | Float32Array, pixels: PixelOptions): Float32Array {
  const x = new Float32Array(raw.length);
  if (pixels.standardize) {
    let mean = 0;
    for (let i = 0; i < raw.length; i++) mean += raw[i];
    mean /= raw.length;
    let variance = 0;
    for (let i = 0; i < raw.length; i++) variance += (raw[i] - mean) ** 2;
    const std = Math.sqrt(variance / raw.length) || 1;
    for (let i = 0; i < raw.length; i++) x[i] = (raw[i] - mean) / std;
  } else {
    for (let i = 0; i < raw.length; i++) x[i] = raw[i] * pixels.scale + pixels.offset;
  }
  return x;
}

/** Decodes one image to `size` as the model's float pixels, or returns null when it is not a readable image. */
export async function decodeImage(file: string, size: InputSize, pixels: PixelOptions): Promise<Float32Array | null> {
  const raw = await decodeRaw(file, size, pixels);
  return raw && modelPixels(raw, pixels);
}

export interface ImageBatch {
  x: tf.Tensor4D;
  labels: (number | null)[];
}

export interface BatchStats {
  /** Files sharp could not read as images. */
  skipped: string[];
  decoded: number;
}

/**
 * Streams decoded batches of `entries`. Unreadable files are skipped and counted in `stats`;
 * the caller disposes each batch's tensor.
 */
export async function* imageBatches(
  entries: ImageEntry[], size: InputSize, batchSize: number, pixels: PixelOptions, stats: BatchStats,
): AsyncGenerator<ImageBatch> {
  const per = size.height * size.width * size.channels;
  for (let start = 0; start < entries.length; start += batchSize) {
    const chunk = entries.slice(start, start + batchSize);
    const decoded = await Promise.all(chunk.map((e) => decodeImage(e.file, size, pixels)));
    const ok = chunk.filter((_, i) => decoded[i] !== null);
    chunk.forEach((e, i) => decoded[i] === null && stats.skipped.push(e.file));
    if (ok.length === 0) continue;
    const data = new Float32Array(ok.length * per);
    let k = 0;
    for (const d of decoded) if (d) data.set(d, (k++) * per);
    stats.decoded += ok.length;
    yield { x: tf.tensor4d(data, [ok.length, size.height, size.width, size.channels]), labels: ok.map((e) => e.label) };
  }
}

/** The model's single image input as height, width, channels (1 or 3: what images can feed). */
export function inputSizeOf(inputShape: (number | null)[], what: string): InputSize {
  if (inputShape.length !== 4 || inputShape.slice(1).some((v) => v === null)) {
    throw new UserError(`${what}: input shape ${JSON.stringify(inputShape)} is not a fixed-size image (batch, height, width, channels)`);
  }
  const channels = inputShape[3]!;
  if (channels !== 1 && channels !== 3) {
    throw new UserError(`the model takes ${channels}-channel input; images can feed 1- or 3-channel models only`);
  }
  return { height: inputShape[1]!, width: inputShape[2]!, channels };
}

/** The image size `model` takes, refusing models that images cannot feed (several inputs, 2 or 4 channels). */
export function modelImageSize(model: tf.LayersModel, what: string): InputSize {
  if (model.inputs.length !== 1) {
    throw new UserError(`${what}: the model takes ${model.inputs.length} inputs; images can feed a model with a single image input only`);
  }
  return inputSizeOf(model.inputs[0].shape, what);
}

/**
 * Checks, before any slow work, that `entries` can feed `model`: a single 1- or 3-channel image
 * input, and finite activations in every layer on the first few images with these pixel options.
 * One image at a time: every layer's output is held at once (an InceptionV3 holds ~100 MB of
 * activations per 299-px image; 16 images together took GBs of the wasm heap and minutes).
 * Returns how many images it read.
 */
export async function probeImages(
  model: tf.LayersModel, entries: ImageEntry[], pixels: PixelOptions, what: string, reporter: Reporter = silentReporter, macsPerImage = 0,
): Promise<number> {
  const size = modelImageSize(model, what);
  const stats: BatchStats = { skipped: [], decoded: 0 };
  const affordable = macsPerImage > 0 ? Math.floor(PROBE_MACS / macsPerImage) : PROBE_IMAGES;
  const probed = entries.slice(0, Math.max(MIN_PROBE_IMAGES, Math.min(PROBE_IMAGES, affordable)));
  const progress = reporter.phase('checking that the first images give finite outputs', probed.length, 'images', USUALLY_QUICK);
  let done = 0;
  for await (const b of imageBatches(probed, size, 1, pixels, stats)) {
    try {
      checkFiniteActivations(model, b.x, what);
    } finally {
      b.x.dispose();
    }
    progress.update(++done);
  }
  progress.finish();
  return stats.decoded;
}

/** Images run through the model by probeImages: 16, fewer on costly models (within PROBE_MACS), never under 4. */
const PROBE_IMAGES = 16;
const MIN_PROBE_IMAGES = 4;
const PROBE_MACS = 25e9;

/** Message for the end of a run that skipped files. */
export function skippedNote(stats: BatchStats): string | null {
  if (stats.skipped.length === 0) return null;
  const shown = stats.skipped.slice(0, 3).map((f) => path.basename(f)).join(', ');
  return `skipped ${stats.skipped.length} unreadable or non-image file${stats.skipped.length > 1 ? 's' : ''} (${shown}${stats.skipped.length > 3 ? ', …' : ''})`;
}

/** Below this many held-out images, one image moves accuracy by more than 5 points. */
export const MIN_HELD_OUT = 20;

/**
 * Why the held-out report may mislead, as warnings: too few held-out images, or held-out images
 * (from --eval-data) that are also fitting images — the same file, or the same bytes elsewhere.
 */
export function heldOutWarnings(fit: ImageEntry[], holdout: ImageEntry[], fromEvalData: boolean): string[] {
  const warnings: string[] = [];
  if (holdout.length < MIN_HELD_OUT) {
    warnings.push(`only ${holdout.length} held-out image${holdout.length === 1 ? '' : 's'}: each moves the held-out accuracy by ${(100 / Math.max(1, holdout.length)).toFixed(1)} points, so those figures say little; ${fromEvalData ? 'give --eval-data more images' : 'raise --holdout or give --eval-data'} (at least ${MIN_HELD_OUT})`);
  }
  if (fromEvalData) {
    const shared = sharedImages(fit.map((e) => e.file), holdout.map((e) => e.file));
    if (shared.length) {
      warnings.push(`${shared.length} of the ${holdout.length} --eval-data images are also fitting images in --data (e.g. ${path.basename(shared[0])}): the held-out figures are not held out; give --eval-data images the fit never sees`);
    }
  }
  return warnings;
}

/** Files of `b` that are files of `a` too: the same file by real path, or the same bytes (hashed only where sizes match). */
function sharedImages(a: string[], b: string[]): string[] {
  const real = (f: string) => {
    try {
      return fs.realpathSync(f);
    } catch {
      return f;
    }
  };
  const size = (f: string) => fs.statSync(f, { throwIfNoEntry: false })?.size ?? -1;
  const hash = (f: string) => {
    try {
      return createHash('sha256').update(fs.readFileSync(f)).digest('hex');
    } catch {
      return null;
    }
  };
  const paths = new Set(a.map(real));
  const sizesA = new Map<number, string[]>();
  for (const f of a) sizesA.set(size(f), [...(sizesA.get(size(f)) ?? []), f]);
  const hashesA = new Map<number, Set<string | null>>();
  return b.filter((f) => {
    if (paths.has(real(f))) return true;
    const same = sizesA.get(size(f));
    if (!same || size(f) < 0) return false;
    if (!hashesA.has(size(f))) hashesA.set(size(f), new Set(same.map(hash)));
    const h = hash(f);
    return h !== null && hashesA.get(size(f))!.has(h);
  });
}
