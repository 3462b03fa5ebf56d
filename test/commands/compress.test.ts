import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { Matrix, SVD } from 'ml-matrix';
import { useBackend } from '../../src/runtime/backend.js';
import type { CompressOptions } from '../../src/plan/plan.js';
import { convGeometry } from '../../src/model/cost.js';
import { scheme2Matrix } from '../../src/schemes/reshape.js';
import { loadModel, saveModel } from '../../src/model/io.js';
import { listLayers } from '../../src/model/layers.js';
import { schemeFor, type SchemeOptions } from '../../src/schemes/index.js';
import {
  CHARCNN, FASHION_TRAIN, NESTED, RESIDUAL, ROOT, SCHEME_VARIANTS, cli, copyModel, errorLine, folderSnapshot, pointwiseModel, runCli, teachableModel, tempDir,
} from '../helpers.js';
import { compressModel } from '../../src/commands/compress.js';

before(async () => {
  await useBackend('wasm');
});

const VARIANTS = SCHEME_VARIANTS;

function fullRanks(model: tf.LayersModel, names: string[], variant: SchemeOptions): Map<string, number> {
  const scheme = schemeFor(variant);
  const layers = listLayers(model);
  return new Map(names.map((n) => [n, scheme.fullRank(convGeometry(layers.find((l) => l.name === n)!))]));
}

function outputs(model: tf.LayersModel, x: tf.Tensor): Float32Array[] {
  return ([model.predict(x)].flat() as tf.Tensor[]).map((t) => t.dataSync() as Float32Array);
}

/** max |a − b| over all outputs, relative to the largest |a|. */
function relativeMaxDiff(a: Float32Array[], b: Float32Array[]): number {
  let diff = 0;
  let scale = 0;
  a.forEach((ya, o) => ya.forEach((v, i) => {
    diff = Math.max(diff, Math.abs(v - b[o][i]));
    scale = Math.max(scale, Math.abs(v));
  }));
  return diff / scale;
}

function randomBatch(model: tf.LayersModel, n = 4): tf.Tensor {
  return tf.randomUniform([n, ...(model.inputs[0].shape.slice(1) as number[])], 0, 1, 'float32', 11);
}

async function expectFullRankExact(model: tf.LayersModel, names: string[], variant: SchemeOptions): Promise<void> {
  const options: CompressOptions = { ...variant, rank: fullRanks(model, names, variant), layers: names, allowSlower: true };
  const result = await compressModel(model, options);
  const x = randomBatch(model);
  const diff = relativeMaxDiff(outputs(model, x), outputs(result.model, x));
  assert.ok(diff < 1e-4, `outputs differ by ${diff.toExponential(2)} of their scale`);
  for (const l of result.layers) assert.ok(l.filterError < 1e-3, `${l.name} filter error ${l.filterError}`);
}

describe('compress at full rank reproduces the model', () => {
  for (const variant of VARIANTS) {
    // Scheme 2 on conv1+conv2: conv3 at its full rank 1024 would be a 1024×2048 SVD on the same
    // (dense, exact-Gram) path as conv2's 432, several seconds for nothing new.
    const charcnnLayers = variant.scheme === '2' ? ['conv1', 'conv2'] : ['conv2', 'conv3'];
    test(`${variant.title}: charcnn ${charcnnLayers.join('+')}`, async () => {
      await expectFullRankExact((await loadModel(CHARCNN)).model, charcnnLayers, variant);
    });
    test(`${variant.title}: residual model (merge input, model output, stride 2, dilation 2, no bias)`, async () => {
      // tfjs' DepthwiseConv2D ignores dilation: --separable refuses dilated convs (tested below).
      const names = variant.separable ? ['branch_b', 'down'] : ['branch_b', 'down', 'side'];
      await expectFullRankExact((await loadModel(RESIDUAL)).model, names, variant);
    });
  }
  test('a conv inside a nested model is replaced in place', async () => {
    const { model } = await loadModel(NESTED);
    await expectFullRankExact(model, ['bb_conv2'], VARIANTS[0]);
  });
});

/** A functional model covering the geometry cases: every conv named g_*. */
function geometryModel(): tf.LayersModel {
  const input = tf.input({ shape: [13, 11, 3] });
  const conv = (name: string, x: tf.SymbolicTensor, args: Partial<Parameters<typeof tf.layers.conv2d>[0]>) =>
    tf.layers.conv2d({ name, filters: 5, kernelSize: 3, ...args, kernelInitializer: tf.initializers.glorotNormal({ seed: name.length }) } as any).apply(x) as tf.SymbolicTensor;
  const a = conv('g_same_even', input, { kernelSize: [4, 2], padding: 'same', strides: 2, activation: 'relu' });
  const b = conv('g_valid_even', input, { kernelSize: [2, 4], padding: 'valid', strides: [2, 1], useBias: false });
  const c = conv('g_dilated', input, { kernelSize: [3, 2], padding: 'same', dilationRate: 2, activation: 'relu' });
  const d = conv('g_stride_same', c, { kernelSize: [5, 3], padding: 'same', strides: 2 });
  const merged = tf.layers.add({ name: 'merge' }).apply([a, d]) as tf.SymbolicTensor;
  const e = conv('g_out', merged, { kernelSize: [2, 2], padding: 'valid', useBias: false });
  return tf.model({ inputs: input, outputs: [e, b] });
}

describe('geometry: every padding/stride/dilation/kernel case keeps the exact output', () => {
  for (const variant of VARIANTS) {
    test(variant.title, async () => {
      const model = geometryModel();
      const names = ['g_same_even', 'g_valid_even', 'g_dilated', 'g_stride_same', 'g_out'].filter((n) => !(variant.separable && n === 'g_dilated'));
      await expectFullRankExact(model, names, variant);
    });
  }
});

function exactSingularValues(kernel: tf.Tensor): number[] {
  const [kh, kw, C, N] = kernel.shape;
  const m = scheme2Matrix(kernel.dataSync() as Float32Array, { kh, kw, C, N });
  const rows = C * kh;
  const cols = kw * N;
  const mat = new Matrix(rows, cols);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) mat.set(i, j, m[i * cols + j]);
  return new SVD(mat, { autoTranspose: true, computeLeftSingularVectors: false, computeRightSingularVectors: false }).diagonal;
}

describe('scheme 2 filter error', () => {
  test('equals the Eckart–Young optimum, and the error recomputed from the saved weights', async () => {
    const { model } = await loadModel(CHARCNN);
    const kernel = listLayers(model).find((l) => l.name === 'conv2')!.layer.getWeights()[0];
    const sigma = exactSingularValues(kernel);
    const total = sigma.reduce((a, s) => a + s * s, 0);
    const out = path.join(tempDir(), 'c');
    for (const rank of [1, 8, 40, 200]) {
      const result = await compressModel(model, { ...VARIANTS[0], rank, layers: ['conv2'] });
      const optimum = Math.sqrt(sigma.slice(rank).reduce((a, s) => a + s * s, 0) / total);
      const reported = result.layers[0].filterError;
      assert.ok(Math.abs(reported - optimum) < 1e-4 * Math.max(optimum, 1e-2), `rank ${rank}: ${reported} vs Eckart–Young ${optimum}`);
      await saveModel(result.model, out, { force: true });
      const saved = listLayers((await loadModel(out)).model);
      const v = saved.find((l) => l.name === 'conv2_v')!.layer.getWeights()[0];
      const h = saved.find((l) => l.name === 'conv2_h')!.layer.getWeights()[0];
      // Ŵ[i,j,c,n] = Σ_k v[i,0,c,k]·h[0,j,k,n]
      const [kh, , C, K] = v.shape;
      const [, kw, , N] = h.shape;
      const recomposed = tf.tidy(() =>
        tf.matMul(v.reshape([kh * C, K]), h.reshape([kw, K, N]).transpose([1, 0, 2]).reshape([K, kw * N]))
          .reshape([kh, C, kw, N]).transpose([0, 2, 1, 3]));
      const err = tf.tidy(() => tf.norm(tf.sub(kernel, recomposed)).div(tf.norm(kernel)).dataSync()[0]);
      assert.ok(Math.abs(err - reported) < 1e-4 * Math.max(reported, 1e-2), `rank ${rank}: saved weights give ${err}, reported ${reported}`);
    }
  });
});

// ---- the channel scheme: 1×1 convs and Dense layers ----------------------------------------------

const CHANNEL: SchemeOptions = { scheme: 'channel', basis: 'per-channel', separable: false };

describe('channel scheme', () => {
  test('at full rank reproduces 1×1 convs (stride 1 and 2) and Dense layers (flattened and sequence input)', async () => {
    await expectFullRankExact(pointwiseModel(), ['p_conv', 'p_stride', 'p_dense', 'p_sequence'], CHANNEL);
  });

  test('--scheme 2 replaces a 1×1 conv by the channel scheme; --scheme channel refuses a 9×9 conv', async () => {
    const { model } = await loadModel(CHARCNN);
    const result = await compressModel(model, { ...VARIANTS[0], rank: new Map([['conv2', 8], ['conv4', 4]]) });
    assert.deepEqual(result.layers.map((l) => [l.name, l.scheme, l.newLayers]), [['conv2', 'scheme2', ['conv2_v', 'conv2_h']], ['conv4', 'channel', ['conv4_a', 'conv4_b']]]);
    await assert.rejects(compressModel(model, { ...CHANNEL, rank: 4, layers: ['conv2'] }), /cannot replace conv2: it is a 9×9 Conv2D; the channel scheme replaces 1×1 Conv2D and Dense layers/);
  });

  test('filter error equals the Eckart–Young optimum of the C×N matrix (1×1 conv and Dense)', async () => {
    const model = pointwiseModel();
    for (const name of ['p_conv', 'p_dense']) {
      const kernel = listLayers(model).find((l) => l.name === name)!.layer.getWeights()[0];
      const [C, N] = kernel.shape.slice(-2);
      const sigma = exactSingularValues(kernel.reshape([1, 1, C, N]));
      const total = sigma.reduce((a, s) => a + s * s, 0);
      for (const rank of [1, 3, Math.min(C, N) - 1]) {
        const result = await compressModel(model, { ...CHANNEL, rank, layers: [name], allowSlower: true });
        const optimum = Math.sqrt(sigma.slice(rank).reduce((a, s) => a + s * s, 0) / total);
        const reported = result.layers[0].filterError;
        assert.ok(Math.abs(reported - optimum) < 1e-4 * Math.max(optimum, 1e-2), `${name} rank ${rank}: ${reported} vs Eckart–Young ${optimum}`);
      }
    }
  });

  test('default selection: 1×1 convs and Dense layers where the rank saves MACs, never the last layer; charcnn runs unchanged', async () => {
    const { model } = await loadModel(CHARCNN);
    const charcnn = await compressModel(model, { ...VARIANTS[0], rank: 8 });
    assert.deepEqual(charcnn.layers.map((l) => l.name), ['conv2', 'conv3'], 'conv4 makes the outputs');
    const pointwise = pointwiseModel();
    // Break-even ranks (largest K with K·(C+N) < C·N): p_conv 6→10: 3, p_stride 10→8: 4, p_dense 160→12: 11;
    // p_sequence makes an output.
    const at = async (rank: number) => (await compressModel(pointwise, { ...VARIANTS[0], rank })).layers.map((l) => l.name);
    assert.deepEqual(await at(3), ['p_conv', 'p_stride', 'p_dense']);
    assert.deepEqual(await at(4), ['p_stride', 'p_dense']);
    assert.deepEqual(await at(11), ['p_dense']);
    await assert.rejects(at(12), /no layer to replace by default .*passed over p_conv \(rank 12 is above its full rank 6\)/);
  });
});

describe('Teachable-Machine-shaped model (Sequential(functional MobileNet block, Dense head))', () => {
  for (const exported of [false, true]) {
  test(`${exported ? 'nested as Teachable Machine exports it (Sequential[Sequential[functional, pooling], Sequential[Dense, Dense]]): ' : ''}the channel scheme replaces its 1×1 convs and Dense layers in place; the output reloads in stock tfjs and reproduces it at full rank`, async () => {
    const dir = tempDir();
    const original = teachableModel(exported);
    await saveModel(original, path.join(dir, 'tm'));
    const out = path.join(dir, 'out');
    const run = await cli(['compress', path.join(dir, 'tm'), '--scheme', 'channel', '--rank', 'expand=8,project=12,last_conv=12,head_dense=20,head_out=3', '--allow-slower', '--out', out, '--json']);
    assert.equal(run.code, 0, run.stderr);
    assert.deepEqual(JSON.parse(run.stdout).layers.map((l: any) => l.scheme), ['channel', 'channel', 'channel', 'channel', 'channel']);
    const json = JSON.parse(fs.readFileSync(path.join(out, 'model.json'), 'utf8'));
    const data = Buffer.concat(json.weightsManifest.flatMap((g: any) => g.paths.map((p: string) => fs.readFileSync(path.join(out, p)))));
    const reloaded = await tf.loadLayersModel(tf.io.fromMemory({
      modelTopology: json.modelTopology, weightSpecs: json.weightsManifest.flatMap((g: any) => g.weights), weightData: data.buffer.slice(data.byteOffset, data.byteOffset + data.length),
    }));
    const names = (m: tf.LayersModel): string[] => m.layers.flatMap((l) => (l instanceof tf.LayersModel ? names(l) : [l.name]));
    assert.deepEqual(names(reloaded).filter((n) => /_(a|b)$/.test(n)), ['expand_a', 'expand_b', 'project_a', 'project_b', 'last_conv_a', 'last_conv_b', 'head_dense_a', 'head_dense_b', 'head_out_a', 'head_out_b']);
    const x = randomBatch(original);
    const diff = relativeMaxDiff(outputs(original, x), outputs(reloaded, x));
    assert.ok(diff < 1e-4, `outputs differ by ${diff.toExponential(2)} of their scale`);
    if (exported) assert.deepEqual(reloaded.layers.map((l) => l.getClassName()), ['Sequential', 'Sequential']);
  });
  }

  test('default selection: the 1×1 convs and the first Dense layer where the rank saves MACs; not the stem, the depthwise conv or the output layer', async () => {
    const result = await compressModel(teachableModel(), { ...VARIANTS[0], rank: 6 });
    // Break-even: expand 8→24: 5, project 24→12: 7, last_conv 12→32: 8, head_dense 32→20: 12.
    assert.deepEqual(result.layers.map((l) => l.name), ['project', 'last_conv', 'head_dense']);
  });

  test('--data: the Dense layers inside the nested head are fitted in closed form too', async () => {
    const dir = tempDir();
    await saveModel(teachableModel(), path.join(dir, 'tm'));
    const run = await cli(['compress', path.join(dir, 'tm'), '--rank', '6', '--out', path.join(dir, 'out'), '--data', FASHION_TRAIN, '--samples', '40', '--holdout', '0.05', '--json']);
    assert.equal(run.code, 0, run.stderr);
    const layers = JSON.parse(run.stdout).layers;
    assert.deepEqual(layers.map((l: any) => [l.name, l.fitSteps]), [['project', 0], ['last_conv', 0], ['head_dense', 0]]);
    for (const l of layers) assert.ok(l.fitError.data <= l.fitError.filter, `${l.name}: ${l.fitError.filter} → ${l.fitError.data}`);
  });
});

describe('compress CLI', () => {
  test('writes a model that plain tfjs loads and runs in a separate process, leaving the input untouched', () => {
    const out = path.join(tempDir(), 'small');
    const input = folderSnapshot(path.dirname(CHARCNN));
    const run = runCli(['compress', CHARCNN, '--scheme', '2', '--rank', 'conv2=12,conv3=16', '--out', out, '--json']);
    assert.equal(run.code, 0, run.stderr);
    const report = JSON.parse(run.stdout);
    assert.deepEqual(Object.keys(report), ['backend', 'input', 'output', 'scheme', 'totalMacsBefore', 'totalMacsAfter', 'theoreticalSpeedup', 'layers', 'skipped', 'fileBytes', 'newWeights', 'warnings']);
    assert.deepEqual(report.layers.map((l: any) => l.newLayers), [['conv2_v', 'conv2_h'], ['conv3_v', 'conv3_h']]);
    assert.match(report.warnings[0], /2 layers at a tiny rank .*conv2 12\/432, conv3 16\/1024; at this speedup data reconstruction is needed/);
    assert.ok(report.theoreticalSpeedup > 1);
    assert.deepEqual(folderSnapshot(path.dirname(CHARCNN)), input);
    const script = `
      import * as tf from '@tensorflow/tfjs';
      import * as fs from 'node:fs';
      const dir = ${JSON.stringify(out)};
      const json = JSON.parse(fs.readFileSync(dir + '/model.json', 'utf8'));
      const buffers = json.weightsManifest.flatMap((g) => g.paths.map((p) => fs.readFileSync(dir + '/' + p)));
      const data = Buffer.concat(buffers);
      const model = await tf.loadLayersModel(tf.io.fromMemory({ modelTopology: json.modelTopology, weightSpecs: json.weightsManifest.flatMap((g) => g.weights), weightData: data.buffer.slice(data.byteOffset, data.byteOffset + data.length) }));
      const y = model.predict(tf.ones([2, 24, 24, 1]));
      console.log(JSON.stringify({ shape: y.shape, sum: y.sum().dataSync()[0], layers: model.layers.map((l) => l.name) }));
    `;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { cwd: ROOT, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const got = JSON.parse(r.stdout.trim().split('\n').pop()!);
    assert.deepEqual(got.shape, [2, 10]);
    assert.ok(Math.abs(got.sum - 2) < 1e-4, 'softmax rows sum to 1');
    assert.deepEqual(got.layers, ['conv1', 'conv2_v', 'conv2_h', 'conv3_v', 'conv3_h', 'conv4', 'flatten', 'softmax']);
  });

  const bad: [string, string[], RegExp][] = [
    ['an unknown layer', ['--layers', 'conv9', '--rank', '4'], /no layer named 'conv9'; eligible: conv1, conv2, conv3, conv4/],
    ['a layer that is not a conv', ['--layers', 'flatten', '--rank', '4'], /cannot replace flatten: it is a Flatten; scheme 2 replaces Conv2D layers/],
    ['a layer named twice in --rank', ['--rank', 'conv2=8,conv2=9'], /conv2 is given twice/],
    ['a --rank entry for a layer --layers does not select', ['--layers', 'conv2', '--rank', 'conv2=8,conv3=9'], /--rank names conv3, which --layers does not select/],
    ['a --rank entry for a layer not in the model (typo)', ['--layers', 'conv2', '--rank', 'conv2=8,cnv3=9'], /--rank names cnv3/],
    ['--layers naming no layer', ['--layers', ',', '--rank', '4'], /--layers names no layer/],
    ['a layer named twice in --layers', ['--layers', 'conv2,conv2', '--rank', '4'], /--layers names conv2 twice/],
    ['a missing rank for the second layer, before any factorizing', ['--layers', 'conv2,conv3', '--rank', 'conv2=8'], /--rank gives no rank for conv3/],
    ['an empty --out', ['--layers', 'conv2', '--rank', '4', '--out', ''], /--out is empty/],
    ['both --rank and --speedup', ['--rank', '4', '--speedup', '4'], /either --rank .* or --speedup/],
    ['neither --rank nor --speedup', ['--layers', 'conv2'], /either --rank .* or --speedup/],
    ['a --speedup of 1 or less', ['--speedup', '0.5'], /--speedup 0.5: give a number above 1/],
    ['an unreachable --speedup', ['--speedup', '80'], /--speedup 80: these layers can make the model at most 29\.\d\d× faster by MACs \(layers left as they are keep 2\.9 % of the MACs \(first conv 2\.9 %/],
    ['--max-loss with --rank', ['--max-loss', '1', '--rank', '4', '--data', FASHION_TRAIN], /--max-loss chooses the speedup itself: give it without --rank/],
    ['--max-loss with --speedup', ['--max-loss', '1', '--speedup', '4', '--data', FASHION_TRAIN], /--max-loss chooses the speedup itself: give it without --speedup/],
    ['--max-loss without --data', ['--max-loss', '1'], /--max-loss measures the loss on held-out images: give --data/],
    ['a negative --max-loss', ['--max-loss', '-1', '--data', FASHION_TRAIN], /--max-loss -1: give the points .* a number ≥ 0/],
    ['--max-loss with --finetune', ['--max-loss', '1', '--data', FASHION_TRAIN, '--finetune'], /--finetune does not combine with --max-loss/],
    ['--probes without --max-loss', ['--speedup', '4', '--probes', '3'], /--probes applies to --max-loss/],
    ['--measured without --speedup', ['--rank', '4', '--measured'], /--measured applies to --speedup/],
    ['--timing-batch without --measured', ['--speedup', '4', '--timing-batch', '8'], /--timing-batch applies to --measured/],
    ['rank 0', ['--layers', 'conv2', '--rank', '0'], /needs a rank from 1 to 432/],
    ['a rank above full rank', ['--layers', 'conv2', '--rank', '433'], /needs a rank from 1 to 432/],
    ['a malformed rank', ['--layers', 'conv2', '--rank', 'conv2:4'], /--rank 'conv2:4'/],
    ['scheme 1 rank above the basis size', ['--scheme', '1', '--layers', 'conv2', '--rank', '82'], /needs a rank from 1 to 81/],
  ];
  for (const [title, args, pattern] of bad) {
    test(`bad input: ${title}`, async () => {
      const parent = tempDir();
      const out = path.join(parent, 'out');
      const run = await cli(['compress', CHARCNN, '--out', out, ...args]);
      assert.notEqual(run.code, 0);
      assert.match(errorLine(run), pattern);
      assert.deepEqual(fs.readdirSync(parent), [], 'nothing written');
    });
  }

  test('bad input: an existing --out needs --force', async () => {
    const out = tempDir();
    fs.writeFileSync(path.join(out, 'keep.txt'), 'x');
    const run = await cli(['compress', CHARCNN, '--layers', 'conv2', '--rank', '8', '--out', out]);
    assert.notEqual(run.code, 0);
    assert.match(errorLine(run), /already exists; choose a new folder or pass --force/);
    assert.deepEqual(fs.readdirSync(out), ['keep.txt']);
    fs.rmSync(path.join(out, 'keep.txt'));
    const forced = await cli(['compress', CHARCNN, '--layers', 'conv2', '--rank', '8', '--out', out, '--force']);
    assert.equal(forced.code, 0, forced.stderr);
    const files = fs.readdirSync(out).sort();
    assert.ok(files.includes('model.json'), files.join(', '));
    assert.ok(files.filter((f) => f !== 'model.json').every((f) => /^group1-shard\d+of\d+\.bin$/.test(f)), files.join(', '));
  });

  test('bad input: --separable on a dilated conv names the tfjs limitation', async () => {
    const parent = tempDir();
    const run = await cli(['compress', RESIDUAL, '--scheme', '1', '--separable', '--layers', 'side', '--rank', '4', '--out', path.join(parent, 'o')]);
    assert.notEqual(run.code, 0);
    assert.match(errorLine(run), /cannot replace side: it is dilated, and tfjs' DepthwiseConv2D ignores dilation/);
    assert.deepEqual(fs.readdirSync(parent), []);
  });

  test('bad input: an unwritable --out leaves nothing behind', async () => {
    const parent = tempDir();
    fs.writeFileSync(path.join(parent, 'file'), 'x');
    const run = await cli(['compress', CHARCNN, '--layers', 'conv2', '--rank', '8', '--out', path.join(parent, 'file', 'out')]);
    assert.notEqual(run.code, 0);
    assert.match(errorLine(run), /is a file, not a folder/);
    assert.deepEqual(fs.readdirSync(parent), ['file']);
  });

  test('a rank that saves nothing is skipped with a warning; --allow-slower replaces it and warns', async () => {
    const out = path.join(tempDir(), 'o');
    // conv3 (8×8, 128→128, 1×1 output) saves MACs up to rank 113; rank 200 costs 1.76× its MACs.
    const run = await cli(['compress', CHARCNN, '--rank', 'conv2=8,conv3=200', '--out', out, '--json']);
    assert.equal(run.code, 0, run.stderr);
    const report = JSON.parse(run.stdout);
    assert.deepEqual(report.layers.map((l: any) => l.name), ['conv2']);
    assert.equal(report.skipped[0].name, 'conv3');
    assert.match(run.stderr, /warning: left conv3 as it is.*--allow-slower/);
    const slower = await cli(['compress', CHARCNN, '--rank', 'conv2=8,conv3=200', '--out', path.join(tempDir(), 'o'), '--allow-slower', '--json']);
    assert.equal(slower.code, 0, slower.stderr);
    assert.deepEqual(JSON.parse(slower.stdout).layers.map((l: any) => l.name), ['conv2', 'conv3']);
    assert.match(slower.stderr, /warning: conv3 at rank 200 costs at least as many MACs as the original layer/);
  });
});

describe('a Teachable Machine metadata.json beside the model', () => {
  test('is copied beside the output, and --force still recognises that output as lowrank\'s', async () => {
    const input = copyModel(CHARCNN);
    const metadata = JSON.stringify({ labels: ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j'], imageSize: 24 });
    fs.writeFileSync(path.join(path.dirname(input), 'metadata.json'), metadata);
    const out = path.join(tempDir(), 'out');
    const first = await cli(['compress', input, '--layers', 'conv2', '--rank', '8', '--out', out]);
    assert.equal(first.code, 0, first.stderr);
    assert.equal(fs.readFileSync(path.join(out, 'metadata.json'), 'utf8'), metadata);
    const again = await cli(['compress', input, '--layers', 'conv2', '--rank', '9', '--out', out, '--force']);
    assert.equal(again.code, 0, again.stderr);
    assert.deepEqual(fs.readdirSync(out).sort(), ['group1-shard1of1.bin', 'metadata.json', 'model.json']);
  });
});
