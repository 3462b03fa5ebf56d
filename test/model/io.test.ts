import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { useBackend } from '../../src/runtime/backend.js';
import { buildModel, checkOutputDir, loadModel, readModelFiles, saveModel } from '../../src/model/io.js';
import { encodeValues, toFloat16 } from '../../src/model/quantize.js';
import { listLayers } from '../../src/model/layers.js';
import { CHARCNN, NESTED, RESIDUAL, cli, errorLine, folderSnapshot, runCli, tempDir } from '../helpers.js';

before(async () => {
  await useBackend('wasm');
});

/** A small saved model for damaging: conv → flatten → dense, float32. */
async function smallModel(): Promise<string> {
  const model = tf.sequential({
    layers: [
      tf.layers.conv2d({ name: 'conv', inputShape: [6, 6, 2], filters: 3, kernelSize: 3 }),
      tf.layers.flatten({ name: 'flat' }),
      tf.layers.dense({ name: 'dense', units: 2 }),
    ],
  });
  const dir = path.join(tempDir(), 'model');
  await saveModel(model, dir);
  return path.join(dir, 'model.json');
}

function editJson(jsonPath: string, edit: (json: any) => void): void {
  const json = JSON.parse(fs.readFileSync(jsonPath, 'utf8'));
  edit(json);
  fs.writeFileSync(jsonPath, JSON.stringify(json));
}

/** Runs inspect on a damaged model and checks the one-line error. */
async function expectError(jsonPath: string, pattern: RegExp): Promise<void> {
  const run = await cli(['inspect', jsonPath]);
  assert.notEqual(run.code, 0, 'exit code');
  const line = errorLine(run);
  assert.match(line, pattern);
  assert.match(line, /model\.json|no such file/);
  assert.doesNotMatch(run.stderr, /^\s+at /m, 'no stack trace');
}

describe('model I/O: round trip', () => {
  for (const [name, fixture] of [['functional with two outputs', RESIDUAL], ['nested models', NESTED]] as const) {
    test(`load → save → load is bit-identical (${name})`, async () => {
      const a = await loadModel(fixture);
      const out = path.join(tempDir(), 'copy');
      const saved = await saveModel(a.model, out, { topology: a.topology });
      const b = await loadModel(saved.jsonPath);
      const la = listLayers(a.model);
      const lb = listLayers(b.model);
      assert.deepEqual(lb.map((l) => l.name), la.map((l) => l.name));
      for (let i = 0; i < la.length; i++) {
        const wa = la[i].layer.getWeights();
        const wb = lb[i].layer.getWeights();
        assert.equal(wb.length, wa.length);
        wa.forEach((w, k) => assert.deepEqual(Buffer.from((wb[k].dataSync() as Float32Array).buffer), Buffer.from((w.dataSync() as Float32Array).buffer)));
      }
      const shape = a.model.inputs[0].shape.map((d) => d ?? 2) as number[];
      const x = tf.randomUniform(shape, 0, 1, 'float32', 5);
      const ya = [a.model.predict(x)].flat() as tf.Tensor[];
      const yb = [b.model.predict(x)].flat() as tf.Tensor[];
      ya.forEach((y, i) => assert.deepEqual(Array.from(yb[i].dataSync()), Array.from(y.dataSync())));
    });
  }

  test('large models are written in 4 MiB shards and read back', async () => {
    const model = tf.sequential({ layers: [tf.layers.dense({ inputShape: [1500], units: 1500, name: 'big' })] });
    const out = path.join(tempDir(), 'big');
    const saved = await saveModel(model, out);
    assert.equal(saved.shards, 3);
    const files = readModelFiles(out);
    assert.equal(files.weightBytes, (1500 * 1500 + 1500) * 4);
    assert.deepEqual(Array.from((await loadModel(out)).model.getWeights()[1].dataSync().slice(0, 5)), Array.from(model.getWeights()[1].dataSync().slice(0, 5)));
  });

  test('quantized (float16, uint8) weights are dequantized as tfjs does', async () => {
    const jsonPath = await smallModel();
    const original = await loadModel(jsonPath);
    const float = readModelFiles(jsonPath);
    for (const dtype of ['float16', 'uint8'] as const) {
      const dir = tempDir();
      const specs: tf.io.WeightsManifestEntry[] = [];
      const chunks: ArrayBuffer[] = [];
      for (const spec of float.weights.map((w) => w.spec)) {
        const tensor = original.model.getWeights()[specs.length];
        const values = tensor.dataSync() as Float32Array;
        if (dtype === 'float16') {
          const half = new Uint16Array(values.length);
          values.forEach((v, i) => (half[i] = toFloat16(v)));
          chunks.push(half.buffer);
          specs.push({ ...spec, quantization: { dtype: 'float16' } });
        } else {
          const min = Math.min(...values);
          const max = Math.max(...values);
          const scale = (max - min) / 255 || 1;
          const q = Uint8Array.from(values, (v) => Math.round((v - min) / scale));
          chunks.push(q.buffer);
          specs.push({ ...spec, quantization: { dtype: 'uint8', scale, min } });
        }
      }
      const total = chunks.reduce((a, c) => a + c.byteLength, 0);
      const data = new Uint8Array(total);
      let offset = 0;
      for (const c of chunks) {
        data.set(new Uint8Array(c), offset);
        offset += c.byteLength;
      }
      fs.writeFileSync(path.join(dir, 'w.bin'), data);
      const json = JSON.parse(fs.readFileSync(jsonPath, 'utf8'));
      json.weightsManifest = [{ paths: ['w.bin'], weights: specs }];
      fs.writeFileSync(path.join(dir, 'model.json'), JSON.stringify(json));
      const q = await loadModel(dir);
      const a = original.model.getWeights()[0].dataSync();
      const b = q.model.getWeights()[0].dataSync();
      const tolerance = dtype === 'float16' ? 1e-3 : 0.02;
      for (let i = 0; i < a.length; i++) assert.ok(Math.abs(a[i] - b[i]) <= tolerance * Math.max(1, Math.abs(a[i])), `${dtype} weight ${i}`);
    }
  });
});

test('a topology whose configs leave the initializers out (the fixture\'s) builds with zero weights, drawing no random numbers', async () => {
  const { topology } = readModelFiles(CHARCNN);
  assert.equal(JSON.stringify(topology).includes('_initializer'), false, 'the fixture saves no initializers');
  const model = await buildModel(topology, 'charcnn');
  const weights = model.getWeights();
  assert.ok(weights.length > 0);
  for (const w of weights) assert.equal(tf.tidy(() => w.abs().max().dataSync()[0]), 0);
  model.dispose();
});

describe('model I/O: bad input gives a one-line error and a non-zero exit', () => {
  test('missing file', () => expectError(path.join(tempDir(), 'none', 'model.json'), /no such file/));
  test('not JSON', async () => {
    const p = await smallModel();
    fs.writeFileSync(p, '{"modelTopology": ');
    await expectError(p, /not valid JSON/);
  });
  test('a GraphModel', async () => {
    const p = await smallModel();
    fs.writeFileSync(p, JSON.stringify({ format: 'graph-model', modelTopology: { node: [], versions: {} }, weightsManifest: [] }));
    await expectError(p, /GraphModel/);
  });
  test('a missing shard', async () => {
    const p = await smallModel();
    fs.rmSync(path.join(path.dirname(p), 'group1-shard1of1.bin'));
    await expectError(p, /shard 'group1-shard1of1\.bin' is missing/);
  });
  test('a short shard', async () => {
    const p = await smallModel();
    const shard = path.join(path.dirname(p), 'group1-shard1of1.bin');
    fs.truncateSync(shard, fs.statSync(shard).size - 4);
    await expectError(p, /truncated/);
  });
  test('an oversized shard', async () => {
    const p = await smallModel();
    fs.appendFileSync(path.join(path.dirname(p), 'group1-shard1of1.bin'), Buffer.alloc(8));
    await expectError(p, /oversized/);
  });
  test('a weight whose name does not match the topology', async () => {
    const p = await smallModel();
    editJson(p, (j) => (j.weightsManifest[0].weights[0].name = 'conv/kernel_renamed'));
    await expectError(p, /weights do not match the topology/);
  });
  test('a weight whose shape does not match the topology', async () => {
    const p = await smallModel();
    editJson(p, (j) => (j.weightsManifest[0].weights[0].shape = [3, 3, 3, 2]));
    await expectError(p, /weights do not match the topology/);
  });
  test('a shard path escaping the model folder', async () => {
    const p = await smallModel();
    fs.copyFileSync(path.join(path.dirname(p), 'group1-shard1of1.bin'), path.join(path.dirname(p), '..', 'outside.bin'));
    editJson(p, (j) => (j.weightsManifest[0].paths = ['../outside.bin']));
    await expectError(p, /leaves the model's folder/);
  });
  test('an unknown layer class', async () => {
    const p = await smallModel();
    editJson(p, (j) => (j.modelTopology.config.layers[1].class_name = 'FancyFlatten'));
    await expectError(p, /unknown layer class 'FancyFlatten'/);
  });
  test('the input folder is never modified by inspect', async () => {
    const p = await smallModel();
    const before = folderSnapshot(path.dirname(p));
    assert.equal(runCli(['inspect', p]).code, 0);
    assert.deepEqual(folderSnapshot(path.dirname(p)), before);
  });
});

describe('weight encodings match tfjs\' decoding', () => {
  test('float16: every half value encodes to itself; halfway cases round to even', () => {
    const halves = new Uint16Array(65536).map((_, i) => i);
    const decoded = tf.io.decodeWeights(halves.buffer, [{ name: 'h', shape: [65536], dtype: 'float32', quantization: { dtype: 'float16' } }]).h.dataSync();
    for (let h = 0; h < 65536; h++) {
      if (Number.isNaN(decoded[h])) assert.ok(Number.isNaN(decoded[toFloat16(decoded[h])]), `NaN ${h}`);
      else assert.equal(toFloat16(decoded[h]), h, `half 0x${h.toString(16)} (${decoded[h]})`);
    }
    // 1 + 2^-11 lies halfway between 1 and the next half: even (1) wins; 1 + 3·2^-11 rounds up to even.
    assert.equal(toFloat16(1 + 2 ** -11), 0x3c00);
    assert.equal(toFloat16(1 + 3 * 2 ** -11), 0x3c02);
    assert.equal(toFloat16(1e6), 0x7c00, 'overflow is Inf');
  });

  test('uint8 and uint16: within half a step of the value, zero exact', () => {
    const values = Float32Array.from({ length: 1000 }, (_, i) => Math.sin(i) * 3 + 1);
    values[7] = 0;
    for (const dtype of ['uint8', 'uint16'] as const) {
      const { bytes, quantization } = encodeValues(values, dtype);
      const decoded = tf.io.decodeWeights(bytes.slice().buffer, [{ name: 'q', shape: [1000], dtype: 'float32', quantization }]).q.dataSync();
      values.forEach((v, i) => assert.ok(Math.abs(decoded[i] - v) <= quantization!.scale! / 2 + 1e-6, `${dtype} ${i}`));
      assert.equal(decoded[7], 0, `${dtype}: zero is exact`);
    }
  });
});

describe('saving never replaces what appeared at --out meanwhile', () => {
  const tiny = () => tf.sequential({ layers: [tf.layers.dense({ inputShape: [2], units: 2 })] });

  test('a folder that appeared after the check is left alone and the save fails', async () => {
    const out = path.join(tempDir(), 'out');
    const check = checkOutputDir(out, false);
    fs.mkdirSync(out);
    fs.writeFileSync(path.join(out, 'theirs.txt'), 'x');
    await assert.rejects(saveModel(tiny(), out, { check }), /appeared while lowrank was working/);
    assert.deepEqual(fs.readdirSync(out), ['theirs.txt']);
    assert.deepEqual(fs.readdirSync(path.dirname(out)), ['out'], 'no partial folder left');
  });

  test('--force replaces only the folder it checked, not one another run put there meanwhile', async () => {
    const parent = tempDir();
    const out = path.join(parent, 'out');
    await saveModel(tiny(), out);
    const check = checkOutputDir(out, true);
    await saveModel(tiny(), path.join(parent, 'other'));
    fs.rmSync(out, { recursive: true });
    fs.renameSync(path.join(parent, 'other'), out); // another run's output, same kind of folder
    const theirs = folderSnapshot(out);
    await assert.rejects(saveModel(tiny(), out, { check }), /replaced by another folder while lowrank was working/);
    assert.deepEqual(folderSnapshot(out), theirs);
    assert.deepEqual(fs.readdirSync(parent), ['out'], 'no partial folder left');
  });
});
