/**
 * Writing a LayersModel as model.json + 4 MiB shards, streamed one weight at a time. Each weight
 * is either copied byte for byte from an input model's shards (a layer lowrank left alone keeps
 * its exact bytes and quantization) or encoded from a tensor (float32, float16, uint8, uint16).
 * Where the folder goes, and how safely, is output.ts' job.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { UserError, firstLine } from '../errors.js';
import { VERSION } from '../version.js';
import { ShardReader, shownPath, type ModelFiles, type WeightEntry } from './files.js';
import { listLayers } from './layers.js';
import { modelTopology } from './load.js';
import { METADATA_KEY, checkOutputDir, createPartial, sweepPartials, type OutputCheck } from './output.js';
import { encodeValues, type Encoding } from './quantize.js';
import type { ModelTopology } from './topology.js';

/** Converter-sized shards. */
export const SHARD_BYTES = 4 * 1024 * 1024;

/** Where one saved weight's bytes come from: an input model's shards, or a tensor to encode. */
export type WeightSource =
  | { name: string; copy: { files: ModelFiles; entry: WeightEntry } }
  | { name: string; tensor: tf.Tensor; encoding: Encoding };

export interface SaveOptions {
  /** Replace an existing `outDir` (only an empty one or a model lowrank wrote). */
  force?: boolean;
  /** The topology to save; default: the model's own (a model built by lowrank has zero initializers). */
  topology?: ModelTopology;
  /** Saved as model.json's userDefinedMetadata, with lowrank's record added under `lowrank`. */
  userDefinedMetadata?: Record<string, unknown>;
  /** Every weight of the model in order (see `keptWeights`); default: the model's weights encoded as `encoding`. */
  weights?: WeightSource[];
  /** Encoding of the default weights; default float32. */
  encoding?: Encoding;
  /** `checkOutputDir`'s result from the start of the run: `outDir` must still be as it was then. */
  check?: OutputCheck;
  /** Messages (swept leftovers of killed runs). */
  log?: (message: string) => void;
  /**
   * Files copied beside model.json, under their own names (a Teachable Machine metadata.json the
   * app needs next to the model); recorded in lowrank's marker so --force recognises them.
   */
  companions?: string[];
}

export interface SavedModel {
  jsonPath: string;
  /** Bytes of model.json. */
  jsonBytes: number;
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
 * The weights of `model` for saving: those of layers not named in `changed` are copied byte for
 * byte from `input` (where it has a weight of the same name and shape), the others are encoded
 * as `encoding`.
 */
export function keptWeights(model: tf.LayersModel, input: ModelFiles, changed: Iterable<string>, encoding: Encoding): WeightSource[] {
  const changedLayers = new Set(changed);
  const changedWeights = new Set<string>();
  for (const info of listLayers(model)) {
    if (changedLayers.has(info.name)) for (const w of info.layer.weights) changedWeights.add(w.originalName);
  }
  const inputWeights = new Map(input.weights.map((w) => [w.spec.name, w]));
  return (model as any).getNamedWeights().map(({ name, tensor }: { name: string; tensor: tf.Tensor }): WeightSource => {
    const entry = inputWeights.get(name);
    if (entry && !changedWeights.has(name) && JSON.stringify(entry.spec.shape) === JSON.stringify(tensor.shape)) {
      return { name, copy: { files: input, entry } };
    }
    return { name, tensor, encoding };
  });
}

const COPY_CHUNK = 4 * 1024 * 1024;

/** Writes every weight and returns the manifest entries; yields to the event loop between weights so Ctrl-C is handled. */
async function writeWeights(writer: ShardWriter, sources: WeightSource[]): Promise<tf.io.WeightsManifestEntry[]> {
  const specs: tf.io.WeightsManifestEntry[] = [];
  const readers = new Map<ModelFiles, ShardReader>();
  try {
    for (const source of sources) {
      if ('copy' in source) {
        const { files, entry } = source.copy;
        let reader = readers.get(files);
        if (!reader) readers.set(files, (reader = new ShardReader(files.shards)));
        for (let done = 0; done < entry.bytes; done += COPY_CHUNK) {
          writer.write(reader.read(entry.offset + done, Math.min(COPY_CHUNK, entry.bytes - done)));
        }
        specs.push({ ...entry.spec, name: source.name });
      } else {
        const { tensor, encoding } = source;
        const values = await tensor.data();
        if (tensor.dtype !== 'float32') {
          writer.write(new Uint8Array(values.buffer, values.byteOffset, values.byteLength));
          specs.push({ name: source.name, shape: tensor.shape, dtype: tensor.dtype as tf.io.WeightsManifestEntry['dtype'] });
        } else {
          const { bytes, quantization } = encodeValues(values as Float32Array, encoding);
          writer.write(bytes);
          specs.push({ name: source.name, shape: tensor.shape, dtype: 'float32', ...(quantization ? { quantization } : {}) });
        }
      }
      await new Promise((resolve) => setImmediate(resolve));
    }
  } finally {
    for (const reader of readers.values()) reader.close();
  }
  return specs;
}

/**
 * Writes `model` as model.json + 4 MiB shards into `outDir` (see output.ts for the guarantees).
 * Weights are streamed one at a time, so saving never holds a second full copy of a large model.
 */
export async function saveModel(model: tf.LayersModel, outDir: string, options: SaveOptions = {}): Promise<SavedModel> {
  const sources: WeightSource[] = options.weights
    ?? (model as any).getNamedWeights().map(({ name, tensor }: { name: string; tensor: tf.Tensor }) => ({ name, tensor, encoding: options.encoding ?? 'float32' }));
  const copiedFrom = [...new Set(sources.flatMap((s) => ('copy' in s ? [s.copy.files] : [])))];
  const inputFiles = copiedFrom.flatMap((f) => [f.jsonPath, ...f.shards.map((s) => s.path)]);
  const check = options.check ?? checkOutputDir(outDir, options.force ?? false, inputFiles);
  const topology = options.topology ?? modelTopology(model);
  const swept = sweepPartials(check.out);
  for (const dir of swept.removed) options.log?.(`removed ${shownPath(dir)}, left by an interrupted run`);
  for (const dir of swept.left) options.log?.(`warning: ${shownPath(dir)} looks like an unfinished output of an earlier run but holds files lowrank did not write; check and remove it`);
  const partial = createPartial(check.out, check.shown);
  try {
    const writer = new ShardWriter(partial.dir);
    const specs = await writeWeights(writer, sources);
    const paths = writer.finish();
    const companions = (options.companions ?? []).map((file) => {
      const name = path.basename(file);
      fs.copyFileSync(file, path.join(partial.dir, name));
      return name;
    });
    const metadata = options.userDefinedMetadata ?? {};
    const previous = metadata[METADATA_KEY];
    const json = {
      format: 'layers-model',
      generatedBy: `TensorFlow.js tfjs-layers v${tf.version_layers}`,
      convertedBy: 'lowrank',
      modelTopology: topology,
      weightsManifest: [{ paths, weights: specs }],
      userDefinedMetadata: {
        ...metadata,
        [METADATA_KEY]: { ...(previous && typeof previous === 'object' ? previous : {}), version: VERSION, ...(companions.length ? { files: companions } : {}) },
      },
    };
    const text = JSON.stringify(json);
    fs.writeFileSync(path.join(partial.dir, 'model.json'), text);
    partial.commit(check);
    return { jsonPath: path.join(check.out, 'model.json'), jsonBytes: Buffer.byteLength(text), weightBytes: writer.bytes, shards: paths.length };
  } catch (err) {
    partial.discard();
    if (err instanceof UserError) throw err;
    throw new UserError(`--out ${outDir}: cannot write the model (${firstLine(err)})`);
  }
}
