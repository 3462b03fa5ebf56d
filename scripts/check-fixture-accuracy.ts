/**
 * Top-1 accuracy of a saved tfjs layers-model on a folder of class-labelled PNG or JPEG images.
 *
 * Defaults to the charcnn fixture on the Fashion-MNIST test PNGs:
 *
 *   npx tsc -p . && node dist/scripts/check-fixture-accuracy.js \
 *       [--model fixtures/charcnn/model.json] [--images fixtures/fashion/test] \
 *       [--expect 90.1] [--tol 0.2] [--backend wasm|cpu]
 *
 * The image folder holds one sub-folder per class; sub-folders sorted by name
 * give the class index (fixtures/fashion/labels.txt, when present next to the
 * folder, must list the same names). Images are decoded with sharp as raw
 * pixels (single-channel 'b-w' for 1-channel models) and scaled by 1/255. With --expect (a percentage), exits with status
 * 1 when the measured accuracy is more than --tol points away from it.
 * The wasm backend (default) takes a few seconds; the pure-JS cpu backend
 * takes over a minute for the 1,000 charcnn test images.
 */
import * as tf from '@tensorflow/tfjs';
import sharp from 'sharp';
import { readdir, readFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

interface ModelJson {
  modelTopology: {};
  weightsManifest: { paths: string[]; weights: tf.io.WeightsManifestEntry[] }[];
}

async function loadModel(modelPath: string): Promise<tf.LayersModel> {
  const json = JSON.parse(await readFile(modelPath, 'utf8')) as ModelJson;
  const dir = path.dirname(modelPath);
  const weightSpecs: tf.io.WeightsManifestEntry[] = [];
  const buffers: ArrayBuffer[] = [];
  for (const group of json.weightsManifest) {
    weightSpecs.push(...group.weights);
    for (const p of group.paths) {
      const b = await readFile(path.join(dir, p));
      buffers.push(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer);
    }
  }
  // fromMemory -> decodeWeights dequantizes entries carrying a "quantization" field.
  return tf.loadLayersModel(
    tf.io.fromMemory({
      modelTopology: json.modelTopology,
      weightSpecs,
      weightData: tf.io.concatenateArrayBuffers(buffers),
    }),
  );
}

async function loadImages(
  root: string,
  expectShape: number[],
): Promise<{ x: Float32Array; labels: number[]; classes: string[] }> {
  const classes = (await readdir(root, { withFileTypes: true }))
    .filter((d) => d.isDirectory())
    .map((d) => d.name)
    .sort();
  const labelsTxt = path.join(path.dirname(root), 'labels.txt');
  if (existsSync(labelsTxt)) {
    const listed = (await readFile(labelsTxt, 'utf8')).split('\n').filter((s) => s.trim() !== '');
    if (listed.join('\n') !== classes.join('\n')) {
      throw new Error(`${labelsTxt} does not match the class folders: ${classes.join(', ')}`);
    }
  }
  const [h, w, c] = expectShape;
  const per = h * w * c;
  const pixels: Float32Array[] = [];
  const labels: number[] = [];
  for (const [ci, cls] of classes.entries()) {
    const files = (await readdir(path.join(root, cls))).filter((f) => /\.(png|jpe?g)$/i.test(f)).sort();
    for (const f of files) {
      // sharp's raw output is sRGB (3 channels) even for an 8-bit grayscale PNG,
      // so ask for the single-channel 'b-w' colourspace when the model wants one channel.
      let img = sharp(path.join(root, cls, f));
      if (c === 1) img = img.toColourspace('b-w');
      const { data, info } = await img.raw().toBuffer({ resolveWithObject: true });
      if (info.width !== w || info.height !== h || info.channels !== c) {
        throw new Error(`${cls}/${f}: ${info.width}x${info.height}x${info.channels}, model wants ${w}x${h}x${c}`);
      }
      const px = new Float32Array(per);
      for (let i = 0; i < per; i++) px[i] = data[i] / 255;
      pixels.push(px);
      labels.push(ci);
    }
  }
  const x = new Float32Array(pixels.length * per);
  pixels.forEach((p, i) => x.set(p, i * per));
  return { x, labels, classes };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      model: { type: 'string', default: path.join(REPO_ROOT, 'fixtures/charcnn/model.json') },
      images: { type: 'string', default: path.join(REPO_ROOT, 'fixtures/fashion/test') },
      expect: { type: 'string' },
      tol: { type: 'string', default: '0.2' },
      backend: { type: 'string', default: 'wasm' },
      batch: { type: 'string', default: '100' },
    },
  });
  if (values.backend === 'wasm') await import('@tensorflow/tfjs-backend-wasm');
  await tf.setBackend(values.backend!);
  await tf.ready();

  const model = await loadModel(path.resolve(values.model!));
  const inShape = model.inputs[0].shape.slice(1) as number[];
  const { x, labels, classes } = await loadImages(path.resolve(values.images!), inShape);
  const n = labels.length;
  const per = inShape.reduce((a, b) => a * b, 1);
  const batch = Number(values.batch);

  const t0 = performance.now();
  const predicted: number[] = [];
  for (let i = 0; i < n; i += batch) {
    const m = Math.min(batch, n - i);
    const top = tf.tidy(() => {
      const xb = tf.tensor(x.subarray(i * per, (i + m) * per), [m, ...inShape]);
      const y = model.predict(xb);
      return tf.argMax(Array.isArray(y) ? y[0] : y, -1);
    });
    predicted.push(...(await top.data()));
    top.dispose();
  }
  const ms = performance.now() - t0;

  const perClass = classes.map(() => [0, 0]);
  let correct = 0;
  labels.forEach((l, i) => {
    perClass[l][1]++;
    if (predicted[i] === l) {
      correct++;
      perClass[l][0]++;
    }
  });
  const acc = (100 * correct) / n;
  for (const [ci, cls] of classes.entries()) {
    const [ok, tot] = perClass[ci];
    console.log(`  ${cls.padEnd(16)} ${ok}/${tot}`);
  }
  console.log(
    `top-1 accuracy: ${acc.toFixed(2)} % (${correct}/${n}) on ${tf.getBackend()} backend, ` +
      `${(ms / n).toFixed(2)} ms/image`,
  );
  if (values.expect !== undefined) {
    const expected = Number(values.expect);
    const tol = Number(values.tol);
    if (!(Math.abs(acc - expected) <= tol)) {
      console.error(`MISMATCH: expected ${expected} ± ${tol} %, measured ${acc.toFixed(2)} %`);
      process.exitCode = 1;
    } else {
      console.log(`matches expected ${expected} % (± ${tol})`);
    }
  }
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
