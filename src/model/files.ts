/**
 * Reading and validating a tfjs LayersModel's files (model.json + binary weight shards) without
 * loading weights: everything a user can get wrong is reported as one line naming the file.
 * Only regular files are read (never a FIFO, device or directory), and model.json is read up to
 * a cap, so a hostile or mistaken path cannot block or exhaust memory. `regularFileSize` and
 * `readCappedFile` are the checks every file lowrank reads goes through (metadata.json, --labels,
 * sweep.json too).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type * as tf from '@tensorflow/tfjs';
import { UserError, firstLine } from '../errors.js';
import type { ModelTopology } from './topology.js';

export interface ShardFile {
  path: string;
  bytes: number;
}

export type WeightEntry = { spec: tf.io.WeightsManifestEntry; offset: number; bytes: number };

/** A validated model.json with its weight layout; weight bytes stay on disk until loaded. */
export interface ModelFiles {
  /** Absolute path of model.json. */
  jsonPath: string;
  /** Bytes of model.json on disk. */
  jsonBytes: number;
  /** The Keras-style topology exactly as the file has it. */
  topology: ModelTopology;
  /** Every weight, in manifest order, with where its bytes start in the concatenated shards. */
  weights: WeightEntry[];
  shards: ShardFile[];
  /** Bytes of all weight shards on disk. */
  weightBytes: number;
  userDefinedMetadata?: Record<string, unknown>;
}

/** Largest model.json read: real ones are kilobytes to a few megabytes. */
const MAX_MODEL_JSON_BYTES = 64 * 1024 * 1024;

export const shownPath = (p: string): string => path.relative(process.cwd(), p) || p;

/** fs.statSync (following symlinks) with the failures a user can cause as one-line errors. */
function statOf(p: string, shown: string, missing = 'give a model.json or a folder holding one'): fs.Stats {
  try {
    return fs.statSync(p);
  } catch (err: any) {
    if (err.code === 'ENOENT') throw new UserError(`${shown}: no such file or directory; ${missing}`);
    if (err.code === 'ELOOP') throw new UserError(`${shown}: a loop of symbolic links; point to the real file`);
    if (err.code === 'EACCES') throw new UserError(`${shown}: permission denied; make it readable`);
    throw new UserError(`${shown}: cannot read (${firstLine(err)})`);
  }
}

/**
 * Fails unless `p` (after following symlinks) is a regular file; returns its size. Opening a FIFO
 * or a device would block or never end, and a folder fails only when read: every file lowrank
 * reads is checked here first. `fix` says what to do instead.
 */
export function regularFileSize(p: string, what: string, fix = 'give the file itself'): number {
  const stat = statOf(p, what, fix);
  if (!stat.isFile()) {
    const kind = stat.isDirectory() ? 'a folder' : stat.isFIFO() ? 'a FIFO' : stat.isSocket() ? 'a socket' : 'a device';
    throw new UserError(`${what}: is ${kind}, not a regular file; ${fix}`);
  }
  return stat.size;
}

/** Opens a file for reading, naming it in the error (EACCES and the like). */
export function openForReading(p: string, what: string): number {
  try {
    return fs.openSync(p, 'r');
  } catch (err: any) {
    if (err.code === 'EACCES' || err.code === 'EPERM') throw new UserError(`${what}: permission denied; make it readable`);
    throw new UserError(`${what}: cannot open (${firstLine(err)})`);
  }
}

/** Reads a regular file of at most `max` bytes (checked before and while reading: the size may lie). */
export function readCappedFile(p: string, what: string, max: number, fix?: string, expected = 'a tfjs model.json'): Buffer {
  const size = regularFileSize(p, what, fix);
  const tooBig = () => new UserError(`${what}: larger than ${max / (1024 * 1024)} MiB; not ${expected}`);
  if (size > max) throw tooBig();
  const fd = openForReading(p, what);
  try {
    const chunks: Buffer[] = [];
    let total = 0;
    for (;;) {
      const chunk = Buffer.alloc(Math.min(1024 * 1024, max + 1 - total));
      const n = fs.readSync(fd, chunk, 0, chunk.length, null);
      if (n === 0) break;
      chunks.push(chunk.subarray(0, n));
      total += n;
      if (total > max) throw tooBig();
    }
    return Buffer.concat(chunks);
  } catch (err) {
    if (err instanceof UserError) throw err;
    throw new UserError(`${what}: cannot read (${firstLine(err)})`);
  } finally {
    fs.closeSync(fd);
  }
}

/** A model.json path, or a directory holding one. */
export function resolveModelJson(input: string): string {
  let p = path.resolve(input);
  if (statOf(p, input).isDirectory()) {
    p = path.join(p, 'model.json');
    if (!fs.existsSync(p)) throw new UserError(`${input}: folder has no model.json; give the model.json path`);
  }
  return p;
}

/** Parses model.json (capped, regular file only); the raw object, not yet validated. */
export function readModelJson(jsonPath: string, shown = shownPath(jsonPath)): { json: any; bytes: number } {
  const text = readCappedFile(jsonPath, shown, MAX_MODEL_JSON_BYTES);
  try {
    return { json: JSON.parse(text.toString('utf8')), bytes: text.length };
  } catch (err) {
    throw new UserError(`${shown}: not valid JSON (${firstLine(err)}); is this a tfjs model.json?`);
  }
}

const QUANTIZED_BYTES: Record<string, number> = { uint8: 1, uint16: 2, float16: 2 };

/** Bytes of one weight in the shards; only float32 weights (optionally quantized as the tfjs-converter does) are accepted. */
function specBytes(spec: tf.io.WeightsManifestEntry, shown: string): number {
  const name = spec?.name;
  if (typeof name !== 'string' || !Array.isArray(spec.shape) || !spec.shape.every((d) => Number.isInteger(d) && d >= 0)) {
    throw new UserError(`${shown}: a weight has no name or no valid shape; not a tfjs model.json`);
  }
  if (spec.dtype !== 'float32') {
    throw new UserError(`${shown}: weight ${name} has dtype ${spec.dtype}; lowrank handles float32 weights (optionally quantized to float16, uint8 or uint16)`);
  }
  const elements = spec.shape.reduce((a, b) => a * b, 1);
  const q = spec.quantization;
  if (!q) return elements * 4;
  const size = QUANTIZED_BYTES[q.dtype];
  if (size === undefined) throw new UserError(`${shown}: weight ${name} has unknown quantization '${q.dtype}'; tfjs quantizes to float16, uint8 or uint16`);
  if (q.dtype !== 'float16' && !(Number.isFinite(q.min) && Number.isFinite(q.scale))) {
    throw new UserError(`${shown}: weight ${name} is ${q.dtype}-quantized but lacks a numeric min and scale; re-convert the model with tensorflowjs_converter`);
  }
  return elements * size;
}

/** Reads and validates model.json and the sizes of its shards, without reading weight bytes. */
export function readModelFiles(input: string): ModelFiles {
  const jsonPath = resolveModelJson(input);
  const shown = shownPath(jsonPath);
  const { json, bytes: jsonBytes } = readModelJson(jsonPath, shown);
  if (json === null || typeof json !== 'object' || Array.isArray(json)) {
    throw new UserError(`${shown}: not a tfjs model.json (expected an object with modelTopology and weightsManifest)`);
  }
  const topology = json.modelTopology;
  if (json.format === 'graph-model' || (topology && (topology.node !== undefined || topology.versions !== undefined))) {
    throw new UserError(
      `${shown}: is a tfjs GraphModel (converted from a TensorFlow graph); lowrank needs a LayersModel (Keras format): convert the Keras model with tensorflowjs_converter --output_format tfjs_layers_model`,
    );
  }
  if (json.format !== undefined && json.format !== 'layers-model') {
    throw new UserError(`${shown}: format '${json.format}' is not a tfjs LayersModel`);
  }
  if (!topology || typeof topology !== 'object') {
    throw new UserError(`${shown}: has no modelTopology; not a tfjs LayersModel model.json`);
  }
  const metadata = json.userDefinedMetadata;
  if (metadata !== undefined && (metadata === null || typeof metadata !== 'object' || Array.isArray(metadata))) {
    throw new UserError(`${shown}: userDefinedMetadata is not an object; tfjs saves an object there`);
  }
  const manifest = json.weightsManifest;
  if (!Array.isArray(manifest)) throw new UserError(`${shown}: has no weightsManifest; not a tfjs LayersModel model.json`);

  const dir = path.dirname(jsonPath);
  // A metadata.json beside the model is read (class names) or copied to the output: checked now,
  // before any work, not when it is opened.
  const metadataPath = path.join(dir, 'metadata.json');
  if (fs.existsSync(metadataPath)) regularFileSize(metadataPath, shownPath(metadataPath), 'lowrank reads it as the model\'s Teachable Machine metadata: replace it with the file or move it away from the model');
  const weights: WeightEntry[] = [];
  const shards: ShardFile[] = [];
  let weightBytes = 0;
  for (const group of manifest) {
    if (!group || !Array.isArray(group.paths) || !Array.isArray(group.weights)) {
      throw new UserError(`${shown}: a weightsManifest group lacks paths or weights`);
    }
    let expected = 0;
    for (const spec of group.weights as tf.io.WeightsManifestEntry[]) {
      const bytes = specBytes(spec, shown);
      weights.push({ spec, offset: weightBytes + expected, bytes });
      expected += bytes;
    }
    let actual = 0;
    for (const shard of group.paths as string[]) {
      const shardPath = path.resolve(dir, String(shard));
      const rel = path.relative(dir, shardPath);
      if (rel.startsWith('..') || path.isAbsolute(rel)) {
        throw new UserError(`${shown}: weight shard path '${shard}' leaves the model's folder; shards must sit beside model.json`);
      }
      if (!fs.existsSync(shardPath)) throw new UserError(`${shown}: weight shard '${shard}' is missing; copy it beside model.json`);
      const bytes = regularFileSize(shardPath, `${shown}: weight shard '${shard}'`);
      fs.closeSync(openForReading(shardPath, `${shown}: weight shard '${shard}'`));
      shards.push({ path: shardPath, bytes });
      actual += bytes;
    }
    if (actual < expected) {
      throw new UserError(`${shown}: weight shards hold ${actual} bytes but the manifest needs ${expected}: a shard is truncated`);
    }
    if (actual > expected) {
      throw new UserError(`${shown}: weight shards hold ${actual} bytes but the manifest needs only ${expected}: a shard is oversized or from another model`);
    }
    weightBytes += actual;
  }
  return { jsonPath, jsonBytes, topology, weights, shards, weightBytes, userDefinedMetadata: metadata };
}

/** Random access to the concatenated shards of a model (a weight may span two shards). */
export class ShardReader {
  private readonly fds = new Map<string, number>();

  constructor(private readonly shards: ShardFile[]) {}

  /** Reads `bytes` bytes at `offset` of the concatenated shards. */
  read(offset: number, bytes: number): Uint8Array {
    const out = new Uint8Array(bytes);
    let shardStart = 0;
    let filled = 0;
    for (const shard of this.shards) {
      const shardEnd = shardStart + shard.bytes;
      if (filled < bytes && offset + filled < shardEnd && offset + filled >= shardStart) {
        const from = offset + filled - shardStart;
        const n = Math.min(bytes - filled, shard.bytes - from);
        let fd = this.fds.get(shard.path);
        if (fd === undefined) this.fds.set(shard.path, (fd = openForReading(shard.path, shownPath(shard.path))));
        if (fs.readSync(fd, out, filled, n, from) !== n) throw new UserError(`${shownPath(shard.path)}: shorter than when it was checked; was it changed meanwhile?`);
        filled += n;
      }
      shardStart = shardEnd;
    }
    return out;
  }

  close(): void {
    for (const fd of this.fds.values()) fs.closeSync(fd);
    this.fds.clear();
  }
}
