/**
 * Builds the small, randomly initialised (seeded) graph fixtures and saves
 * them in the TensorFlow.js "layers-model" format (float32 weights):
 *
 *   fixtures/residual/  functional model with a skip connection (Add), a
 *                       strided conv, a dilated no-bias conv and two outputs
 *   fixtures/nested/    Teachable-Machine-like nesting: a Sequential whose
 *                       first layer is a functional Model ("backbone")
 *
 * Build and run:  npx tsc -p . && node dist/scripts/make-graph-fixtures.js [fixturesDir]
 * (fixturesDir defaults to <repo>/fixtures). Each saved model is reloaded
 * with tf.loadLayersModel(tf.io.fromMemory(...)) and checked to predict the
 * same values as the in-memory model.
 */
import * as tf from '@tensorflow/tfjs';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const GENERATED_BY = 'lowrank scripts/make-graph-fixtures.ts';
const WEIGHTS_FILE = 'group1-shard1of1.bin';

/** Repo root, from dist/scripts/make-graph-fixtures.js. */
const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

let nextSeed = 1000;
/** Fresh seeded initialisers so that every layer gets different, reproducible weights. */
type Initializer = ReturnType<typeof tf.initializers.zeros>;
function kernelInit(): Initializer {
  return tf.initializers.glorotUniform({ seed: nextSeed++ });
}
function biasInit(): Initializer {
  return tf.initializers.randomUniform({ minval: -0.05, maxval: 0.05, seed: nextSeed++ });
}

function conv(
  name: string,
  filters: number,
  kernelSize: number,
  opts: {
    strides?: number;
    padding?: 'same' | 'valid';
    dilationRate?: number;
    activation?: 'relu' | 'linear';
    useBias?: boolean;
  } = {},
): tf.layers.Layer {
  const useBias = opts.useBias ?? true;
  return tf.layers.conv2d({
    name,
    filters,
    kernelSize,
    strides: opts.strides ?? 1,
    padding: opts.padding ?? 'same',
    dilationRate: opts.dilationRate ?? 1,
    activation: opts.activation ?? 'relu',
    useBias,
    kernelInitializer: kernelInit(),
    ...(useBias ? { biasInitializer: biasInit() } : {}),
  });
}

function buildResidual(): tf.LayersModel {
  const input = tf.input({ shape: [16, 16, 3], name: 'input' });
  const stem = conv('stem', 16, 3).apply(input) as tf.SymbolicTensor;
  const a = conv('branch_a', 16, 3).apply(stem) as tf.SymbolicTensor;
  const b = conv('branch_b', 16, 3, { activation: 'linear' }).apply(a) as tf.SymbolicTensor;
  const add = tf.layers.add({ name: 'add' }).apply([stem, b]) as tf.SymbolicTensor;
  const relu = tf.layers.activation({ name: 'relu', activation: 'relu' }).apply(add) as tf.SymbolicTensor;
  const down = conv('down', 32, 3, { strides: 2 }).apply(relu) as tf.SymbolicTensor;
  const side = conv('side', 8, 5, {
    padding: 'valid',
    dilationRate: 2,
    activation: 'linear',
    useBias: false,
  }).apply(add) as tf.SymbolicTensor;
  const gap = tf.layers.globalAveragePooling2d({ name: 'gap' }).apply(down) as tf.SymbolicTensor;
  const logits = tf.layers
    .dense({
      name: 'logits',
      units: 10,
      activation: 'softmax',
      kernelInitializer: kernelInit(),
      biasInitializer: biasInit(),
    })
    .apply(gap) as tf.SymbolicTensor;
  return tf.model({ name: 'residual', inputs: input, outputs: [logits, side] });
}

function buildNested(): tf.LayersModel {
  const input = tf.input({ shape: [12, 12, 3], name: 'bb_input' });
  let x = conv('bb_conv1', 8, 3).apply(input) as tf.SymbolicTensor;
  x = conv('bb_conv2', 8, 3).apply(x) as tf.SymbolicTensor;
  x = tf.layers.globalAveragePooling2d({ name: 'bb_gap' }).apply(x) as tf.SymbolicTensor;
  const backbone = tf.model({ name: 'backbone', inputs: input, outputs: x });
  const head = tf.layers.dense({
    name: 'head',
    units: 4,
    activation: 'softmax',
    kernelInitializer: kernelInit(),
    biasInitializer: biasInit(),
  });
  return tf.sequential({ name: 'nested', layers: [backbone, head] });
}

function concatWeightData(data: ArrayBuffer | ArrayBuffer[] | undefined): ArrayBuffer {
  if (data === undefined) throw new Error('model.save produced no weight data');
  return tf.io.concatenateArrayBuffers(Array.isArray(data) ? data : [data]);
}

interface Saved {
  modelJson: {
    format: string;
    generatedBy: string;
    convertedBy: null;
    modelTopology: {};
    weightsManifest: { paths: string[]; weights: tf.io.WeightsManifestEntry[] }[];
  };
  weightData: ArrayBuffer;
}

async function saveModel(model: tf.LayersModel, dir: string): Promise<Saved> {
  let saved: Saved | undefined;
  await model.save(
    tf.io.withSaveHandler(async (a) => {
      const weightData = concatWeightData(a.weightData);
      saved = {
        modelJson: {
          format: 'layers-model',
          generatedBy: GENERATED_BY,
          convertedBy: null,
          modelTopology: a.modelTopology as {},
          weightsManifest: [{ paths: [WEIGHTS_FILE], weights: a.weightSpecs ?? [] }],
        },
        weightData,
      };
      return { modelArtifactsInfo: tf.io.getModelArtifactsInfoForJSON(a) };
    }),
  );
  if (!saved) throw new Error('save handler was not called');
  await mkdir(dir, { recursive: true });
  await writeFile(path.join(dir, 'model.json'), JSON.stringify(saved.modelJson, null, 1) + '\n');
  await writeFile(path.join(dir, WEIGHTS_FILE), Buffer.from(saved.weightData));
  return saved;
}

/** Reload from the saved artifacts and compare predictions with the original model. */
async function checkReload(name: string, model: tf.LayersModel, saved: Saved): Promise<void> {
  const reloaded = await tf.loadLayersModel(
    tf.io.fromMemory({
      modelTopology: saved.modelJson.modelTopology,
      weightSpecs: saved.modelJson.weightsManifest[0].weights,
      weightData: saved.weightData,
    }),
  );
  const inShape = model.inputs[0].shape.slice(1) as number[];
  const x = tf.randomUniform([2, ...inShape], 0, 1, 'float32', 7);
  const toList = (y: tf.Tensor | tf.Tensor[]) => (Array.isArray(y) ? y : [y]);
  const expected = toList(model.predict(x));
  const actual = toList(reloaded.predict(x));
  if (expected.length !== actual.length) throw new Error(`${name}: output count differs after reload`);
  const parts: string[] = [];
  for (let i = 0; i < expected.length; i++) {
    const diff = tf.max(tf.abs(tf.sub(expected[i], actual[i]))).dataSync()[0];
    if (!(diff < 1e-6)) throw new Error(`${name}: output ${i} differs after reload (max abs diff ${diff})`);
    parts.push(`[${actual[i].shape.join(',')}]`);
  }
  const bytes = saved.weightData.byteLength;
  console.log(
    `${name}: ${saved.modelJson.weightsManifest[0].weights.length} weights, ${bytes} bytes, ` +
      `outputs ${parts.join(' ')}; reload OK`,
  );
  tf.dispose([x, ...expected, ...actual]);
  reloaded.dispose();
}

async function main(): Promise<void> {
  const outRoot = path.resolve(process.argv[2] ?? path.join(REPO_ROOT, 'fixtures'));
  await tf.setBackend('cpu');
  await tf.ready();

  const models: [string, () => tf.LayersModel][] = [
    ['residual', buildResidual],
    ['nested', buildNested],
  ];
  for (const [name, build] of models) {
    const model = build();
    const saved = await saveModel(model, path.join(outRoot, name));
    await checkReload(name, model, saved);
    model.dispose();
  }
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
