/**
 * Reading and writing tfjs LayersModel files (model.json + binary weight shards).
 * Reading validates everything a user can get wrong and reports it as one line naming the file;
 * writing goes through a temporary directory renamed into place, so no half-written model remains.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { UserError, firstLine } from '../errors.js';

export interface ShardFile {
  path: string;
  bytes: number;
}

/** A validated model.json with its weight layout; weight bytes stay on disk until loaded. */
export interface ModelFiles {
  /** Absolute path of model.json. */
  jsonPath: string;
  /** The Keras-style topology exactly as the file has it. */
  topology: any;
  /** Every weight, in manifest order, with where its bytes start in the concatenated shards. */
  weights: { spec: tf.io.WeightsManifestEntry; offset: number; bytes: number }[];
  shards: ShardFile[];
  /** Bytes of all weight shards on disk. */
  weightBytes: number;
  userDefinedMetadata?: {};
}

export interface LoadedModel extends ModelFiles {
  model: tf.LayersModel;
}

/** A model.json path, or a directory holding one. */
export function resolveModelJson(input: string): string {
  let p = path.resolve(input);
  if (!fs.existsSync(p)) throw new UserError(`${input}: no such file or directory; give a model.json or a folder holding one`);
  if (fs.statSync(p).isDirectory()) {
    p = path.join(p, 'model.json');
    if (!fs.existsSync(p)) throw new UserError(`${input}: folder has no model.json; give the model.json path`);
  }
  return p;
}

const BYTES_PER_ELEMENT: Record<string, number> = { float32: 4, int32: 4, bool: 1, uint8: 1, uint16: 2, float16: 2 };

function specBytes(spec: tf.io.WeightsManifestEntry, shown: string): number {
  const dtype = spec.quantization?.dtype ?? spec.dtype;
  const size = BYTES_PER_ELEMENT[dtype];
  if (size === undefined || !Array.isArray(spec.shape)) throw new UserError(`${shown}: weight ${spec.name} has an unsupported dtype or no shape`);
  return spec.shape.reduce((a, b) => a * b, 1) * size;
}

const shownPath = (p: string): string => path.relative(process.cwd(), p) || p;

/** Reads and validates model.json and the sizes of its shards, without reading weight bytes. */
export function readModelFiles(input: string): ModelFiles {
  const jsonPath = resolveModelJson(input);
  const shown = shownPath(jsonPath);
  let json: any;
  try {
    json = JSON.parse(fs.readFileSync(jsonPath, 'utf8'));
  } catch (err) {
    throw new UserError(`${shown}: not valid JSON (${firstLine(err)}); is this a tfjs model.json?`);
  }
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
  const manifest = json.weightsManifest;
  if (!Array.isArray(manifest)) throw new UserError(`${shown}: has no weightsManifest; not a tfjs LayersModel model.json`);

  const dir = path.dirname(jsonPath);
  const weights: ModelFiles['weights'] = [];
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
      const shardPath = path.resolve(dir, shard);
      const rel = path.relative(dir, shardPath);
      if (rel.startsWith('..') || path.isAbsolute(rel)) {
        throw new UserError(`${shown}: weight shard path '${shard}' leaves the model's folder; shards must sit beside model.json`);
      }
      if (!fs.existsSync(shardPath) || !fs.statSync(shardPath).isFile()) {
        throw new UserError(`${shown}: weight shard '${shard}' is missing; copy it beside model.json`);
      }
      const bytes = fs.statSync(shardPath).size;
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
  return { jsonPath, topology, weights, shards, weightBytes, userDefinedMetadata: json.userDefinedMetadata };
}

/** Reads `bytes` bytes at `offset` of the concatenated shards (a weight may span two shards). */
function readWeightBytes(shards: ShardFile[], fds: Map<string, number>, offset: number, bytes: number): Uint8Array {
  const out = new Uint8Array(bytes);
  let shardStart = 0;
  let filled = 0;
  for (const shard of shards) {
    const shardEnd = shardStart + shard.bytes;
    if (filled < bytes && offset + filled < shardEnd && offset + filled >= shardStart) {
      const from = offset + filled - shardStart;
      const n = Math.min(bytes - filled, shard.bytes - from);
      let fd = fds.get(shard.path);
      if (fd === undefined) fds.set(shard.path, (fd = fs.openSync(shard.path, 'r')));
      fs.readSync(fd, out, filled, n, from);
      filled += n;
    }
    shardStart = shardEnd;
  }
  return out;
}

/**
 * A copy of a topology whose layers initialise every weight to zeros: building it is fast (no
 * random numbers for weights that are overwritten at once). Only used to construct models; what
 * lowrank saves is always the original topology.
 */
export function zeroInitialized(topology: any): any {
  const copy = structuredClone(topology);
  const visit = (node: any) => {
    if (Array.isArray(node)) node.forEach(visit);
    else if (node && typeof node === 'object') {
      for (const key of Object.keys(node)) {
        if (key.endsWith('_initializer') && node[key] && typeof node[key] === 'object') node[key] = { class_name: 'Zeros', config: {} };
        else visit(node[key]);
      }
    }
  };
  visit(copy);
  return copy;
}

/** Builds a tfjs LayersModel from a topology (weights zero), turning tfjs' errors into one-line ones. */
export async function buildModel(topology: any, shown: string): Promise<tf.LayersModel> {
  // Build on the cpu backend: its zeros are lazily committed pages, so a large model's
  // placeholder weights cost no memory before the real ones (on the active backend) replace them.
  const active = tf.getBackend();
  try {
    if (active !== 'cpu') await tf.setBackend('cpu');
    return await tf.models.modelFromJSON({ modelTopology: zeroInitialized(topology) });
  } catch (err) {
    const message = firstLine(err);
    const unknown = /Unknown (?:layer|activation|initializer|regularizer|constraint)[^:]*: ([A-Za-z0-9_.]*[A-Za-z0-9_])/.exec(message);
    if (unknown) {
      throw new UserError(`${shown}: unknown layer class '${unknown[1]}'; lowrank loads stock tfjs layers only (register no custom classes)`);
    }
    throw new UserError(`${shown}: cannot build the model (${message})`);
  } finally {
    if (tf.getBackend() !== active) await tf.setBackend(active);
  }
}

/**
 * Loads the weights one at a time from disk into the model's variables, so a large model never
 * has a second full copy in memory. Dequantization is tfjs' own (io.decodeWeights).
 */
async function loadWeights(model: tf.LayersModel, files: ModelFiles, shown: string): Promise<void> {
  const variables = new Map<string, tf.LayerVariable>();
  for (const v of model.weights) variables.set(v.originalName, v);
  const mismatch = (detail: string) => new UserError(`${shown}: the weights do not match the topology (${detail})`);
  const seen = new Set<string>();
  const fds = new Map<string, number>();
  try {
    for (const w of files.weights) {
      const variable = variables.get(w.spec.name);
      if (!variable) throw mismatch(`the file has a weight '${w.spec.name}' that no layer of the topology owns`);
      if (JSON.stringify(variable.shape) !== JSON.stringify(w.spec.shape)) {
        throw mismatch(`'${w.spec.name}' has shape [${w.spec.shape}] in the file but [${variable.shape}] in the topology`);
      }
      const bytes = readWeightBytes(files.shards, fds, w.offset, w.bytes);
      // Plain float32 goes straight in; quantized weights are dequantized by tfjs itself.
      const tensor = w.spec.dtype === 'float32' && !w.spec.quantization
        ? tf.tensor(new Float32Array(bytes.buffer, 0, bytes.length / 4), w.spec.shape, 'float32')
        : tf.io.decodeWeights(bytes.buffer as ArrayBuffer, [w.spec])[w.spec.name];
      variable.write(tensor);
      tensor.dispose();
      seen.add(w.spec.name);
    }
  } finally {
    for (const fd of fds.values()) fs.closeSync(fd);
  }
  const missing = [...variables.keys()].filter((n) => !seen.has(n));
  if (missing.length) throw mismatch(`${missing.length} weight${missing.length > 1 ? 's' : ''} of the topology missing from the file: ${missing.slice(0, 4).join(', ')}${missing.length > 4 ? ', …' : ''}`);
}

export async function loadModel(input: string): Promise<LoadedModel> {
  const files = readModelFiles(input);
  const shown = shownPath(files.jsonPath);
  const model = await buildModel(files.topology, shown);
  await loadWeights(model, files, shown);
  return { ...files, model };
}

/** The model's Keras-style topology, as tfjs would save it (without touching the weights). */
export function modelTopology(model: tf.LayersModel): any {
  const topology = model.toJSON(null, false) as any;
  restoreDepthMultipliers(topology, model);
  return topology;
}

/**
 * tfjs 4.x SeparableConv2D.getConfig() omits depth_multiplier, so a saved multiplier > 1 reloads
 * as 1 and the weights no longer fit. Put it back from the live layers.
 */
function restoreDepthMultipliers(topology: any, model: tf.LayersModel): void {
  const multipliers = new Map<string, number>();
  const collect = (m: tf.LayersModel) => {
    for (const layer of m.layers) {
      if (layer instanceof tf.LayersModel) collect(layer);
      else if (layer.getClassName() === 'SeparableConv2D') multipliers.set(layer.name, (layer as any).depthMultiplier);
    }
  };
  collect(model);
  if (multipliers.size === 0) return;
  const visit = (node: any) => {
    if (Array.isArray(node)) node.forEach(visit);
    else if (node && typeof node === 'object') {
      if (node.class_name === 'SeparableConv2D' && node.config && multipliers.has(node.config.name)) {
        node.config.depth_multiplier = multipliers.get(node.config.name);
      }
      Object.values(node).forEach(visit);
    }
  };
  visit(topology);
}

/** Converter-sized shards. */
export const SHARD_BYTES = 4 * 1024 * 1024;

/**
 * Fails early, before any work, if `outDir` cannot become the output: it exists (without force),
 * it is the input's own folder, or its parent cannot be created.
 */
export function checkOutputDir(outDir: string, force: boolean, inputJsonPath?: string): void {
  const out = path.resolve(outDir);
  if (inputJsonPath && path.resolve(path.dirname(inputJsonPath)) === out) {
    throw new UserError(`--out ${outDir} is the input model's folder; the input is never modified: choose another folder`);
  }
  if (fs.existsSync(out) && !force) {
    throw new UserError(`--out ${outDir} already exists; choose a new folder or pass --force to replace it`);
  }
  if (fs.existsSync(out) && !fs.statSync(out).isDirectory()) {
    throw new UserError(`--out ${outDir} exists and is not a folder`);
  }
  let parent = path.dirname(out);
  while (!fs.existsSync(parent)) parent = path.dirname(parent);
  if (!fs.statSync(parent).isDirectory()) {
    throw new UserError(`--out ${outDir}: ${parent} is a file, not a folder`);
  }
  try {
    fs.accessSync(parent, fs.constants.W_OK);
  } catch {
    throw new UserError(`--out ${outDir}: ${parent} is not writable`);
  }
}

export interface SavedModel {
  jsonPath: string;
  weightBytes: number;
  shards: number;
}

/** Writes byte chunks into consecutive files of at most SHARD_BYTES each. */
class ShardWriter {
  readonly paths: string[] = [];
  private fd: number | null = null;
  private used = 0;
  bytes = 0;

  constructor(private readonly dir: string) {}

  write(data: Uint8Array): void {
    let offset = 0;
    while (offset < data.length) {
      if (this.fd === null || this.used === SHARD_BYTES) this.next();
      const n = Math.min(SHARD_BYTES - this.used, data.length - offset);
      fs.writeSync(this.fd!, data, offset, n);
      offset += n;
      this.used += n;
      this.bytes += n;
    }
  }

  private next(): void {
    this.close();
    this.paths.push(`shard${this.paths.length + 1}`);
    this.fd = fs.openSync(path.join(this.dir, this.paths[this.paths.length - 1]), 'w');
    this.used = 0;
  }

  close(): void {
    if (this.fd !== null) fs.closeSync(this.fd);
    this.fd = null;
  }

  /** Renames the shards to the converter's group1-shardIofN.bin names. */
  finish(): string[] {
    this.close();
    if (this.paths.length === 0) this.next();
    this.close();
    const n = this.paths.length;
    return this.paths.map((p, i) => {
      const name = `group1-shard${i + 1}of${n}.bin`;
      fs.renameSync(path.join(this.dir, p), path.join(this.dir, name));
      return name;
    });
  }
}

/**
 * Writes `model` as model.json + 4 MiB shards into `outDir`, atomically. Weights are streamed
 * one tensor at a time, so saving never holds a second full copy of a large model.
 */
export async function saveModel(
  model: tf.LayersModel,
  outDir: string,
  options: { force?: boolean; userDefinedMetadata?: {}; topology?: any } = {},
): Promise<SavedModel> {
  checkOutputDir(outDir, options.force ?? false);
  // A model built by lowrank has zero initializers: save the topology it was built from.
  const topology = options.topology ?? modelTopology(model);
  const out = path.resolve(outDir);
  const parent = path.dirname(out);
  let tmp: string;
  try {
    fs.mkdirSync(parent, { recursive: true });
    tmp = fs.mkdtempSync(path.join(parent, `.${path.basename(out)}.partial-`));
  } catch (err) {
    throw new UserError(`--out ${outDir}: cannot create the folder (${firstLine(err)})`);
  }
  try {
    const writer = new ShardWriter(tmp);
    const specs: tf.io.WeightsManifestEntry[] = [];
    // The names tfjs itself saves under (a weight's original, non-uniquified name).
    for (const { name, tensor } of (model as any).getNamedWeights() as { name: string; tensor: tf.Tensor }[]) {
      const values = await tensor.data();
      writer.write(new Uint8Array(values.buffer, values.byteOffset, values.byteLength));
      specs.push({ name, shape: tensor.shape, dtype: tensor.dtype as tf.io.WeightsManifestEntry['dtype'] });
    }
    const paths = writer.finish();
    const json = {
      format: 'layers-model',
      generatedBy: `TensorFlow.js tfjs-layers v${tf.version_layers}`,
      convertedBy: 'lowrank',
      modelTopology: topology,
      weightsManifest: [{ paths, weights: specs }],
      ...(options.userDefinedMetadata ? { userDefinedMetadata: options.userDefinedMetadata } : {}),
    };
    fs.writeFileSync(path.join(tmp, 'model.json'), JSON.stringify(json));
    fs.chmodSync(tmp, 0o777 & ~process.umask()); // mkdtemp makes it private
    if (fs.existsSync(out)) {
      // --force: move the old folder aside first so a failure never leaves neither.
      const old = `${tmp}-old`;
      fs.renameSync(out, old);
      fs.renameSync(tmp, out);
      fs.rmSync(old, { recursive: true, force: true });
    } else {
      fs.renameSync(tmp, out);
    }
    return { jsonPath: path.join(out, 'model.json'), weightBytes: writer.bytes, shards: paths.length };
  } catch (err) {
    fs.rmSync(tmp, { recursive: true, force: true });
    if (err instanceof UserError) throw err;
    throw new UserError(`--out ${outDir}: cannot write the model (${firstLine(err)})`);
  }
}
