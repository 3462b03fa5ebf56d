import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import sharp from 'sharp';
import * as tf from '@tensorflow/tfjs';
import { Matrix, SVD, solve } from 'ml-matrix';
import { useBackend } from '../../src/runtime/backend.js';
import type { CompressOptions } from '../../src/plan/plan.js';
import { DEFAULT_PIXELS, imageBatches } from '../../src/data/images.js';
import { loadModel, saveModel } from '../../src/model/io.js';
import { listLayers } from '../../src/model/layers.js';
import { dataReconstruction, type DataReport } from '../../src/reconstruct/report.js';
import { silentReporter, type ReconstructOptions, type Reporter } from '../../src/reconstruct/index.js';
import type { SchemeOptions } from '../../src/schemes/index.js';
import { CHARCNN, FASHION_TEST, FASHION_TRAIN, cli, errorLine, pointwiseModel, tempDir } from '../helpers.js';
import { compressModel } from '../../src/commands/compress.js';
import { loadImages, planImages } from '../../src/data/plan.js';

before(async () => {
  await useBackend('wasm');
});

const SCHEME2: SchemeOptions = { scheme: '2', basis: 'per-channel', separable: false };
const SCHEME1: SchemeOptions = { scheme: '1', basis: 'per-channel', separable: false };
const SHARED: SchemeOptions = { scheme: '1', basis: 'shared', separable: false };
const SEPARABLE: SchemeOptions = { scheme: '1', basis: 'per-channel', separable: true };
const CHANNEL: SchemeOptions = { scheme: 'channel', basis: 'per-channel', separable: false };

// ---- the factored forward pass -----------------------------------------------------------------

/** Convs of every geometry, linear activation so a layer's output is its linear response + bias. */
function geometryModel(): tf.LayersModel {
  const input = tf.input({ shape: [13, 11, 3] });
  const conv = (name: string, x: tf.SymbolicTensor, args: Record<string, unknown>) =>
    tf.layers.conv2d({
      name, filters: 6, kernelSize: 3, ...args,
      kernelInitializer: tf.initializers.glorotNormal({ seed: name.length }),
      biasInitializer: tf.initializers.randomNormal({ seed: name.length + 1 }),
    } as any).apply(x) as tf.SymbolicTensor;
  const a = conv('g_same_even', input, { kernelSize: [4, 2], padding: 'same', strides: 2 });
  const b = conv('g_valid_even', input, { kernelSize: [2, 4], padding: 'valid', strides: [2, 1], useBias: false });
  const c = conv('g_dilated', input, { kernelSize: [3, 2], padding: 'same', dilationRate: 2 });
  const d = conv('g_stride_same', c, { kernelSize: [5, 3], padding: 'same', strides: 2 });
  const merged = tf.layers.add({ name: 'merge' }).apply([a, d]) as tf.SymbolicTensor;
  const e = conv('g_out', merged, { kernelSize: [2, 2], padding: 'valid', useBias: false });
  return tf.model({ inputs: input, outputs: [e, b] });
}

function relativeMaxDiff(a: tf.Tensor, b: tf.Tensor): number {
  return tf.tidy(() => a.sub(b).abs().max().dataSync()[0] / b.abs().max().dataSync()[0]);
}

/** The factored forward pass of every replaced layer equals the tfjs replacement layers, directly and via design × last factor. */
async function expectFactoredForward(model: tf.LayersModel, names: string[], variant: SchemeOptions, rank: number): Promise<void> {
  const result = await compressModel(model, { ...variant, rank, layers: names, allowSlower: true });
  const layers = new Map(listLayers(result.model).map((l) => [l.name, l.layer]));
  for (const t of result.factorizations) {
    const fl = t.scheme.factored(t.target, t.rank);
    const g = t.target.geometry;
    const x = tf.randomNormal([3, g.inH, g.inW, g.C], 0, 1, 'float32', 5) as tf.Tensor4D;
    const f = t.factors.map((w) => tf.tensor(w.values, w.shape));
    const expected = tf.tidy(() => t.scheme.layers(t).reduce((h, l) => layers.get(l.config.name)!.apply(h) as tf.Tensor, x as tf.Tensor).reshape([-1, g.N]));
    const bias = t.target.bias ? tf.tensor1d(t.target.bias) : tf.zeros([g.N]);
    const mine = tf.tidy(() => fl.forward(x, f).add(bias));
    const viaDesign = tf.tidy(() => tf.matMul(fl.design(x, f), f[fl.last].reshape([fl.lastFanIn, g.N])).add(bias));
    const d1 = relativeMaxDiff(mine, expected);
    const d2 = relativeMaxDiff(viaDesign, expected);
    assert.ok(d1 < 1e-5, `${t.target.name}: forward differs by ${d1.toExponential(2)}`);
    assert.ok(d2 < 1e-5, `${t.target.name}: design × last factor differs by ${d2.toExponential(2)}`);
    tf.dispose([x, ...f, expected, bias, mine, viaDesign]);
    fl.dispose();
  }
}

const POINTWISE = ['p_conv', 'p_stride', 'p_dense', 'p_sequence'];

describe('factored forward pass', () => {
  const variants: [string, SchemeOptions, number][] = [
    ['scheme 2', SCHEME2, 3], ['scheme 1 per-channel', SCHEME1, 2], ['scheme 1 shared', SHARED, 2], ['scheme 1 separable', SEPARABLE, 2],
  ];
  for (const [title, variant, rank] of variants) {
    test(`${title}: equals the tfjs replacement layers, and design × last factor equals it too`, async () => {
      // tfjs' DepthwiseConv2D ignores dilation, so --separable refuses dilated convs.
      const names = ['g_same_even', 'g_valid_even', 'g_dilated', 'g_stride_same', 'g_out'].filter((n) => !(variant.separable && n === 'g_dilated'));
      await expectFactoredForward(geometryModel(), names, variant, rank);
    });
  }
  test('channel (1×1 convs, strided, Dense on flattened and sequence input): equals the tfjs replacement layers, and design × last factor too', async () => {
    await expectFactoredForward(pointwiseModel(true), POINTWISE, CHANNEL, 3);
  });

  test('hand-written gradients match finite differences (every factor, offset, prior)', async () => {
    const cases: [tf.LayersModel, SchemeOptions, string[]][] = [
      ...[SCHEME2, SCHEME1, SEPARABLE].map((v): [tf.LayersModel, SchemeOptions, string[]] => [geometryModel(), v, ['g_same_even', 'g_stride_same']]),
      // p_conv is p_stride without the stride; its 126 output rows make the float32 sums too coarse for a difference quotient.
      [pointwiseModel(true), CHANNEL, ['p_stride', 'p_dense', 'p_sequence']],
    ];
    for (const [model, variant, names] of cases) {
      const result = await compressModel(model, { ...variant, rank: 2, layers: names, allowSlower: true });
      for (const t of result.factorizations) {
        const fl = t.scheme.factored(t.target, t.rank);
        const g = t.target.geometry;
        const x = tf.randomNormal([2, g.inH, g.inW, g.C], 0, 1, 'float32', 7) as tf.Tensor4D;
        const f = t.factors.map((w) => tf.tensor(w.values, w.shape));
        const rows = 2 * g.outH * g.outW;
        const target = tf.randomNormal([rows, g.N], 0, 1, 'float32', 8) as tf.Tensor2D;
        const offset = tf.randomNormal([g.N], 0, 1, 'float32', 9) as tf.Tensor1D;
        const half = (ff: tf.Tensor[], o: tf.Tensor1D) => tf.tidy(() => fl.forward(x, ff).add(o).sub(target).square().sum().mul(0.5).dataSync()[0]);
        const prior = (ff: tf.Tensor[]) => {
          const r = fl.filterObjective(ff);
          const v = r.value.dataSync()[0];
          tf.dispose([r.value, ...r.grads]);
          return v;
        };
        const step = fl.step(x, f, target, offset);
        const reg = fl.filterObjective(f);
        // Every objective is quadratic in each single factor, so a central difference is exact.
        const check = (analytic: tf.Tensor, value: (d: tf.Tensor) => number, seed: number) => {
          const dir = tf.randomNormal(analytic.shape, 0, 1, 'float32', seed);
          const numeric = (value(dir) - value(dir.neg())) / 2;
          const exact = tf.tidy(() => analytic.mul(dir).sum().dataSync()[0]);
          assert.ok(Math.abs(numeric - exact) <= 2e-3 * Math.max(1, Math.abs(numeric)), `${variant.scheme}/${t.target.name}: ${numeric} vs ${exact}`);
          dir.dispose();
        };
        f.forEach((_, p) => {
          const moved = (d: tf.Tensor) => f.map((ff, i) => (i === p ? ff.add(d) : ff));
          check(step.grads[p], (d) => half(moved(d), offset), 20 + p);
          check(reg.grads[p], (d) => prior(moved(d)), 30 + p);
        });
        check(step.offsetGrad!, (d) => half(f, offset.add(d) as tf.Tensor1D), 40);
        fl.dispose();
      }
    }
  });
});

// ---- the channel scheme's closed-form data fit ----------------------------------------------------

/**
 * Reduced-rank regression solved independently (ml-matrix): min ‖Y − XM − 1oᵀ‖² + λ‖M − W‖² over
 * rank-K M is ordinary least squares on the data stacked with λ rows √λ·I → √λ·W (centred when o is
 * free), projected on the top-K right singular vectors of the fitted values.
 */
function bruteForceRrr(x: Matrix, y: Matrix, w: Matrix, k: number, lambda: number, hasBias: boolean): { m: Matrix; o: number[] | null } {
  const xMean = hasBias ? x.mean('column') : new Array(x.columns).fill(0);
  const yMean = hasBias ? y.mean('column') : new Array(y.columns).fill(0);
  const xc = x.clone().subRowVector(xMean as number[]);
  const yc = y.clone().subRowVector(yMean as number[]);
  const xa = Matrix.zeros(x.rows + x.columns, x.columns);
  const ya = Matrix.zeros(y.rows + x.columns, y.columns);
  xa.setSubMatrix(xc, 0, 0);
  ya.setSubMatrix(yc, 0, 0);
  xa.setSubMatrix(Matrix.eye(x.columns).mul(Math.sqrt(lambda)), x.rows, 0);
  ya.setSubMatrix(w.clone().mul(Math.sqrt(lambda)), y.rows, 0);
  const ols = solve(xa, ya, true);
  const fitted = xa.mmul(ols);
  const v = new SVD(fitted, { autoTranspose: true }).rightSingularVectors.subMatrix(0, y.columns - 1, 0, k - 1);
  const m = ols.mmul(v).mmul(v.transpose());
  return { m, o: hasBias ? (yMean as number[]).map((ym, j) => ym - (xMean as number[]).reduce((a, xm, c) => a + xm * m.get(c, j), 0)) : null };
}

describe('channel scheme: closed-form data fit', () => {
  const cases: [number, number, number][] = [[7, 4, 2], [3, 6, 2]]; // C ≥ N and C < N
  for (const [C, N, K] of cases) {
    for (const hasBias of [true, false]) {
      for (const kappa of [0, 0.2]) {
        test(`C=${C}, N=${N}, K=${K}, ${hasBias ? 'offset' : 'no offset'}, κ=${kappa}: matches a brute-force reduced-rank regression`, async () => {
          const input = tf.input({ shape: [C] });
          const dense = tf.layers.dense({ units: N, useBias: hasBias, kernelInitializer: tf.initializers.randomNormal({ seed: C * N }) }).apply(input) as tf.SymbolicTensor;
          const model = tf.model({ inputs: input, outputs: dense });
          const [f] = (await compressModel(model, { ...CHANNEL, rank: K, layers: [model.layers[1].name], allowSlower: true })).factorizations;
          const R = 40;
          // Inputs with a non-zero mean, targets the layer's response plus structured noise.
          const x = tf.tidy(() => tf.randomNormal([R, C], 0, 1, 'float32', 1).add(tf.linspace(-1, 2, C)));
          const w = tf.tensor2d(f.target.kernel, [C, N]);
          const y = tf.tidy(() => tf.matMul(x, w).add(tf.randomNormal([R, N], 0, 0.5, 'float32', 2)).add(tf.linspace(0, 1, N)) as tf.Tensor2D);
          const form = f.scheme.factored(f.target, K);
          const stats = form.closedForm!();
          // Two batches: the statistics add up.
          stats.add(x.slice(0, 15).reshape([15, 1, 1, C]) as tf.Tensor4D, y.slice(0, 15) as tf.Tensor2D);
          stats.add(x.slice(15).reshape([R - 15, 1, 1, C]) as tf.Tensor4D, y.slice(15) as tf.Tensor2D);
          const sol = stats.solve(f.factors, hasBias, kappa);
          const toMatrix = (values: ArrayLike<number>, rows: number, cols: number) => new Matrix(rows, cols).apply(function (this: Matrix, i: number, j: number) { this.set(i, j, values[i * cols + j]); });
          const xm = toMatrix(x.dataSync(), R, C);
          const ym = toMatrix(y.dataSync(), R, N);
          const wm = toMatrix(f.target.kernel, C, N);
          const mu = xm.clone().pow(2).sum() / (R * C);
          const expected = bruteForceRrr(xm, ym, wm, K, kappa * mu * R, hasBias);
          const mine = toMatrix(sol.factors[0].values, C, K).mmul(toMatrix(sol.factors[1].values, K, N));
          const scale = expected.m.norm();
          assert.ok(mine.clone().sub(expected.m).norm() < 1e-4 * scale, `M differs by ${mine.clone().sub(expected.m).norm() / scale}`);
          if (hasBias) {
            const diff = Math.max(...expected.o!.map((o, j) => Math.abs(o - sol.offset![j])));
            assert.ok(diff < 1e-4 * Math.max(1, ...expected.o!.map(Math.abs)), `offset differs by ${diff}`);
          } else {
            assert.equal(sol.offset, null);
          }
          // Its data error is no worse than the filter start's.
          const residual = ym.clone().sub(xm.mmul(mine));
          if (sol.offset) residual.subRowVector(Array.from(sol.offset));
          const startM = toMatrix(f.factors[0].values, C, K).mmul(toMatrix(f.factors[1].values, K, N));
          const sse = residual.pow(2).sum();
          const sseStart = ym.clone().sub(xm.mmul(startM)).pow(2).sum();
          assert.ok(sse <= sseStart, `data ${sse} vs filter ${sseStart}`);
          tf.dispose([x, w, y]);
          form.dispose();
        });
      }
    }
  }
});

// ---- data reconstruction on the fixture ----------------------------------------------------------

/** Few images and steps: the tests check direction, not the benchmark's numbers. */
const FIT_IMAGES = 150;
const HELD_OUT = 100;

interface Run {
  report: DataReport;
  weights: Float32Array[];
}

async function reconstruct(variant: SchemeOptions, rank: CompressOptions['rank'], options: Partial<ReconstructOptions>, layers = ['conv2', 'conv3']): Promise<Run> {
  const charcnn = await loadModel(CHARCNN);
  const result = await compressModel(charcnn.model, { ...variant, rank, layers, topology: charcnn.topology });
  result.model.dispose();
  const opts: ReconstructOptions = {
    data: FASHION_TRAIN, evalData: FASHION_TEST, holdout: 0.2, samples: FIT_IMAGES, joint: true, iterations: 40, batch: 16, seed: 3,
    pixels: DEFAULT_PIXELS, ...options,
  };
  const plan = planImages(opts);
  plan.holdout = plan.holdout.filter((_, i) => i % 10 < HELD_OUT / 100); // every class, HELD_OUT images
  const stores = await loadImages(charcnn.model, plan, opts);
  const { report, built } = await dataReconstruction(charcnn, result.factorizations, { stores, images: plan, options: opts, reporter: silentReporter });
  const weights = built.model.getWeights().map((w) => w.dataSync() as Float32Array);
  built.model.dispose();
  charcnn.model.dispose();
  return { report, weights };
}

function assertDataBeatsFilter(report: DataReport, layers = 2): void {
  assert.equal(report.layers.length, layers);
  for (const l of report.layers) {
    assert.ok(l.dataError.data < l.dataError.filter, `${l.name}: held-out error ${l.dataError.filter} → ${l.dataError.data}`);
    assert.ok(l.fitError.data <= l.fitError.filter, `${l.name}: fitting error ${l.fitError.filter} → ${l.fitError.data}`);
  }
}

describe('data reconstruction on the charcnn fixture', () => {
  // Runs shared by several tests, computed by whichever test needs them first: any test passes alone.
  const shared = new Map<string, Promise<Run>>();
  const sharedRun = (joint: boolean) => {
    const key = String(joint);
    if (!shared.has(key)) shared.set(key, reconstruct(SCHEME2, new Map([['conv2', 10], ['conv3', 24]]), { joint }));
    return shared.get(key)!;
  };

  test('scheme 2: lowers the held-out output error of every replaced layer', async () => {
    const joint = await sharedRun(true);
    assertDataBeatsFilter(joint.report);
    assert.equal(joint.report.images.fit, FIT_IMAGES);
    assert.equal(joint.report.images.holdout, HELD_OUT);
    assert.ok(joint.report.accuracy && joint.report.accuracy.labeled === HELD_OUT);
  });

  test('scheme 2: joint beats non-joint on the last replaced layer', async () => {
    const joint = await sharedRun(true);
    const nonJoint = await sharedRun(false);
    assertDataBeatsFilter(nonJoint.report);
    const last = (r: DataReport) => r.layers[r.layers.length - 1].dataError.data;
    assert.ok(last(joint.report) < last(nonJoint.report), `conv3: joint ${last(joint.report)} vs non-joint ${last(nonJoint.report)}`);
    // Both start from the same filter reconstruction.
    assert.equal(joint.report.layers[1].dataError.filter, nonJoint.report.layers[1].dataError.filter);
  });

  test('the same seed gives identical results', async () => {
    const joint = await sharedRun(true);
    const again = await reconstruct(SCHEME2, new Map([['conv2', 10], ['conv3', 24]]), { joint: true });
    assert.deepEqual(again.report.layers.map((l) => [l.fitError, l.dataError]), joint.report.layers.map((l) => [l.fitError, l.dataError]));
    assert.deepEqual(again.report.accuracy, joint.report.accuracy);
    assert.deepEqual(again.weights, joint.weights);
  });

  test('scheme 1 (per-channel): lowers the held-out output error of every replaced layer', async () => {
    const run = await reconstruct(SCHEME1, new Map([['conv2', 2], ['conv3', 2]]), { iterations: 30 });
    assertDataBeatsFilter(run.report);
  });

  test('scheme 1 separable: lowers the held-out output error of every replaced layer', async () => {
    const run = await reconstruct(SEPARABLE, new Map([['conv2', 2], ['conv3', 2]]), { iterations: 30 });
    assertDataBeatsFilter(run.report);
  });

  test('channel (conv4, behind scheme 2 on conv3): the closed form beats the filter reconstruction in one pass, no steps', async () => {
    for (const joint of [true, false]) {
      // Few Adam steps: conv3 needs only some, and conv4 would take them too without its closed form.
      const run = await reconstruct(SCHEME2, new Map([['conv3', 24], ['conv4', 3]]), { joint, iterations: 5 }, ['conv3', 'conv4']);
      assertDataBeatsFilter(run.report);
      const conv4 = run.report.layers[1];
      assert.equal(conv4.kept, 'data');
      assert.equal(conv4.steps, 0);
    }
  });
});

/** The fixture with one layer replaced and fitted (joint, exact solve only) on 60 fitting images. */
async function fitOneLayer(options: Parameters<typeof compressModel>[1]) {
  const loaded = await loadModel(CHARCNN);
  const charcnn = loaded.model;
  const result = await compressModel(charcnn, { ...options, topology: loaded.topology });
  const opts: ReconstructOptions = {
    data: FASHION_TRAIN, evalData: FASHION_TEST, holdout: 0.2, samples: 60, joint: true, iterations: 0, batch: 16, seed: 3, pixels: DEFAULT_PIXELS,
  };
  const plan = planImages(opts);
  plan.holdout = plan.holdout.slice(0, 10);
  const stores = await loadImages(charcnn, plan, opts);
  const { report, built } = await dataReconstruction({ model: charcnn, topology: loaded.topology }, result.factorizations, { stores, images: plan, options: opts, reporter: silentReporter });
  return { charcnn, result, plan, report, built };
}

describe('the sample cache', () => {
  test('is filled only for Adam: a fit without steps streams every pass', async () => {
    const loaded = await loadModel(CHARCNN);
    const result = await compressModel(loaded.model, { ...SCHEME2, rank: 16, layers: ['conv2'], topology: loaded.topology });
    const phases = async (iterations: number) => {
      const labels: string[] = [];
      const reporter: Reporter = { phase: (label) => (labels.push(label), { update() {}, finish() {} }), note() {} };
      const opts: ReconstructOptions = {
        data: FASHION_TRAIN, evalData: FASHION_TEST, holdout: 0.2, samples: 40, joint: true, iterations, batch: 16, seed: 3, pixels: DEFAULT_PIXELS,
      };
      const plan = planImages(opts);
      plan.holdout = plan.holdout.slice(0, 5);
      const stores = await loadImages(loaded.model, plan, opts);
      const { report, built } = await dataReconstruction(loaded, result.factorizations, { stores, images: plan, options: opts, reporter });
      built.model.dispose();
      return { labels, report };
    };
    const solveOnly = await phases(0);
    assert.ok(!solveOnly.labels.some((l) => l.endsWith(': collecting')), solveOnly.labels.join(', '));
    assert.equal(solveOnly.report.layers[0].kept, 'data');
    const withAdam = await phases(5);
    assert.ok(withAdam.labels.includes('conv2: collecting'), withAdam.labels.join(', '));
    loaded.model.dispose();
  });
});

describe('the reported fitting error', () => {
  test('equals ‖Y − Ŷ‖/‖Y‖ computed directly from the written layers on the fitting images (a close fit: rank 200 of 432)', async () => {
    const { charcnn, result, plan, report, built } = await fitOneLayer({ ...SCHEME2, rank: 200, layers: ['conv2'] });
    // Y: conv2's linear response; Ŷ: conv2_v then conv2_h with their (fitted) bias, minus conv2's bias.
    const [kernel, bias] = charcnn.getLayer('conv2').getWeights();
    const [v] = built.model.getLayer('conv2_v').getWeights();
    const [h, fittedBias] = built.model.getLayer('conv2_h').getWeights();
    const conv2Input = tf.model({ inputs: charcnn.inputs, outputs: charcnn.getLayer('conv2').input as tf.SymbolicTensor });
    let sse = 0;
    let yy = 0;
    for await (const b of imageBatches(plan.fit, { height: 24, width: 24, channels: 1 }, 30, DEFAULT_PIXELS, { skipped: [], decoded: 0 })) {
      tf.tidy(() => {
        const phi = conv2Input.predict(b.x) as tf.Tensor4D;
        const y = tf.conv2d(phi, kernel as tf.Tensor4D, 1, 'valid');
        const yHat = tf.conv2d(tf.conv2d(phi, v as tf.Tensor4D, 1, 'valid'), h as tf.Tensor4D, 1, 'valid').add(fittedBias).sub(bias);
        sse += yHat.sub(y).square().sum().dataSync()[0];
        yy += y.square().sum().dataSync()[0];
      });
      b.x.dispose();
    }
    const direct = Math.sqrt(sse / yy);
    const reported = report.layers[0].fitError.data;
    assert.equal(report.layers[0].kept, 'data');
    assert.ok(Math.abs(reported - direct) <= 0.01 * direct, `reported ${reported}, direct ${direct}`);
    result.model.dispose();
    built.model.dispose();
  });
});

describe('the reported fitting error of the closed form', () => {
  test('equals ‖Y − Ŷ‖/‖Y‖ computed directly from the written layers (channel scheme, conv4 at rank 9 of 10)', async () => {
    const { charcnn, result, plan, report, built } = await fitOneLayer({ ...CHANNEL, rank: 9, layers: ['conv4'], allowSlower: true });
    const [kernel, bias] = charcnn.getLayer('conv4').getWeights();
    const [a] = built.model.getLayer('conv4_a').getWeights();
    const [b, fittedBias] = built.model.getLayer('conv4_b').getWeights();
    const conv4Input = tf.model({ inputs: charcnn.inputs, outputs: charcnn.getLayer('conv4').input as tf.SymbolicTensor });
    let sse = 0;
    let yy = 0;
    let sseFilter = 0;
    const [a0, b0] = result.factorizations[0].factors.map((w) => tf.tensor4d(w.values, w.shape as [number, number, number, number]));
    for await (const batch of imageBatches(plan.fit, { height: 24, width: 24, channels: 1 }, 30, DEFAULT_PIXELS, { skipped: [], decoded: 0 })) {
      tf.tidy(() => {
        const phi = conv4Input.predict(batch.x) as tf.Tensor4D;
        const y = tf.conv2d(phi, kernel as tf.Tensor4D, 1, 'valid');
        const yHat = tf.conv2d(tf.conv2d(phi, a as tf.Tensor4D, 1, 'valid'), b as tf.Tensor4D, 1, 'valid').add(fittedBias).sub(bias);
        const yFilter = tf.conv2d(tf.conv2d(phi, a0, 1, 'valid'), b0, 1, 'valid');
        sse += yHat.sub(y).square().sum().dataSync()[0];
        sseFilter += yFilter.sub(y).square().sum().dataSync()[0];
        yy += y.square().sum().dataSync()[0];
      });
      batch.x.dispose();
    }
    tf.dispose([a0, b0]);
    const [layer] = report.layers;
    assert.equal(layer.kept, 'data');
    const close = (reported: number, direct: number) => Math.abs(reported - direct) <= 0.01 * direct;
    assert.ok(close(layer.fitError.data, Math.sqrt(sse / yy)), `reported ${layer.fitError.data}, direct ${Math.sqrt(sse / yy)}`);
    assert.ok(close(layer.fitError.filter, Math.sqrt(sseFilter / yy)), `reported ${layer.fitError.filter}, direct ${Math.sqrt(sseFilter / yy)}`);
    result.model.dispose();
    built.model.dispose();
  });
});

// ---- the CLI: reports and bad image input ----------------------------------------------------------

describe('compress --data (CLI)', () => {
  const dirs: string[] = [];
  const temp = () => {
    const d = tempDir();
    dirs.push(d);
    return d;
  };
  after(() => dirs.forEach((d) => fs.rmSync(d, { recursive: true, force: true })));

  /** A folder with `n` copies of fixture images per class (`classes` classes). */
  const imageFolder = (n: number, classes = 2): string => {
    const dir = temp();
    for (const cls of fs.readdirSync(FASHION_TRAIN).sort().slice(0, classes)) {
      fs.mkdirSync(path.join(dir, cls));
      for (const f of fs.readdirSync(path.join(FASHION_TRAIN, cls)).sort().slice(0, n)) {
        fs.copyFileSync(path.join(FASHION_TRAIN, cls, f), path.join(dir, cls, f));
      }
    }
    return dir;
  };
  const cheap = ['--layers', 'conv3', '--rank', '8', '--iterations', '5', '--batch', '8'];

  test('--json: per-layer dataError and fitError, top-level accuracy, every existing field kept; nothing else on stdout', async () => {
    const data = imageFolder(6, 3);
    const run = await cli(['compress', CHARCNN, ...cheap, '--out', path.join(temp(), 'out'), '--data', data, '--json']);
    assert.equal(run.code, 0, run.stderr);
    const report = JSON.parse(run.stdout);
    for (const key of ['backend', 'input', 'output', 'scheme', 'totalMacsBefore', 'totalMacsAfter', 'theoreticalSpeedup', 'layers', 'skipped']) {
      assert.ok(key in report, `missing ${key}`);
    }
    const layer = report.layers[0];
    for (const key of ['name', 'rank', 'filterError', 'newLayers']) assert.ok(key in layer, `layer misses ${key}`);
    assert.ok(layer.dataError.filter > 0 && layer.dataError.data > 0);
    assert.deepEqual(Object.keys(report.accuracy).sort(), ['data', 'filter', 'original']);
    assert.equal(report.dataReconstruction.images.fit + report.dataReconstruction.images.holdout, 18);
    assert.match(run.stderr, /conv3: fitting/);
  });

  test('human report: two error columns, the accuracy and agreement lines; plain progress lines when stderr is not a terminal', async () => {
    const data = imageFolder(5, 2);
    const run = await cli(['compress', CHARCNN, ...cheap, '--out', path.join(temp(), 'out'), '--data', data, '--no-joint']);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /output error: filter\s+data/);
    assert.match(run.stdout, /top-1 accuracy on 2 held-out images: original [\d.]+%, filter reconstruction [\d.]+%, data reconstruction [\d.]+%/);
    // Agreement is shown with or without labels: the damage warnings point to it.
    assert.match(run.stdout, /agreement with the original's top-1 on 2 held-out images: filter reconstruction [\d.]+%, data reconstruction [\d.]+%/);
    assert.match(run.stderr, /conv3: fitting: 5\/5 iterations in/);
    assert.doesNotMatch(run.stderr, /\x1b\[/);
  });

  const bad: [string, () => string[], RegExp][] = [
    ['an empty folder', () => ['--data', temp()], /holds no files/],
    ['a folder of 1 image', () => ['--data', imageFolder(1, 1)], /only 1 image; data reconstruction needs at least 2/],
    ['a folder of unreadable files only', () => {
      const dir = temp();
      for (let i = 0; i < 3; i++) fs.writeFileSync(path.join(dir, `broken${i}.png`), 'not a png');
      return ['--data', dir];
    }, /0 readable fitting images \(of 2\); data reconstruction needs at least 2/],
    ['--joint without --data', () => ['--joint'], /--joint applies to data reconstruction: give --data/],
    ['--holdout out of range', () => ['--data', imageFolder(2), '--holdout', '1.5'], /--holdout 1.5: give a fraction between 0 and 1/],
  ];
  for (const [title, args, message] of bad) {
    test(`bad input: ${title} → one-line error`, async () => {
      const run = await cli(['compress', CHARCNN, ...cheap, '--out', path.join(temp(), 'out'), ...args()]);
      assert.equal(run.code, 1, run.stderr);
      assert.match(errorLine(run), message);
      assert.match(errorLine(run), /^lowrank: /);
    });
  }

  test('corrupt files among good ones are skipped and counted; RGB images feed a grayscale model', async () => {
    const data = imageFolder(4, 2);
    const cls = fs.readdirSync(data)[0];
    fs.writeFileSync(path.join(data, cls, 'zz-broken.png'), 'not a png');
    const rgb = await sharp(path.join(FASHION_TRAIN, cls, fs.readdirSync(path.join(FASHION_TRAIN, cls))[10])).toColourspace('srgb').png().toBuffer();
    fs.writeFileSync(path.join(data, cls, 'zz-rgb.png'), rgb);
    const run = await cli(['compress', CHARCNN, ...cheap, '--out', path.join(temp(), 'out'), '--data', data, '--json']);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stderr, /skipped 1 unreadable or non-image file \(zz-broken\.png\)/);
    const report = JSON.parse(run.stdout);
    assert.equal(report.dataReconstruction.images.skipped, 1);
    assert.equal(report.dataReconstruction.images.fit + report.dataReconstruction.images.holdout, 9);
  });

  test('a model whose input is not 1 or 3 channels → one-line error', async () => {
    const dir = temp();
    const model = tf.sequential({
      layers: [
        tf.layers.conv2d({ inputShape: [12, 12, 2], filters: 8, kernelSize: 3, name: 'a' }),
        tf.layers.conv2d({ filters: 8, kernelSize: 3, name: 'b' }),
      ],
    });
    await saveModel(model, path.join(dir, 'two'));
    const run = await cli(['compress', path.join(dir, 'two'), '--layers', 'b', '--rank', '2', '--out', path.join(dir, 'out'), '--data', imageFolder(2)]);
    assert.equal(run.code, 1, run.stderr);
    assert.match(errorLine(run), /the model takes 2-channel input; images can feed 1- or 3-channel models only/);
  });
});
