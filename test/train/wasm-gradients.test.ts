/**
 * The wasm backward kernels of src/train/wasm-gradients.ts against the cpu backend's own kernels
 * and against finite differences (the loss Σ r·conv(x, w) is linear in x and in w, so a central
 * difference is exact up to rounding).
 */
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { useBackend } from '../../src/runtime/backend.js';
import { xoshiro128plus } from '../../src/runtime/random.js';
import { registerWasmGradients } from '../../src/train/wasm-gradients.js';

before(async () => {
  await useBackend('wasm');
  registerWasmGradients();
});

interface Case {
  title: string;
  depthwise: boolean;
  x: number[];
  /** [kh, kw, C, N] (depthwise: N = channel multiplier). */
  w: number[];
  strides: [number, number];
  dilations: [number, number];
  pad: 'same' | 'valid';
}

const CASES: Case[] = [
  { title: 'conv 3×3 same', depthwise: false, x: [2, 7, 6, 3], w: [3, 3, 3, 4], strides: [1, 1], dilations: [1, 1], pad: 'same' },
  { title: 'conv 4×2 stride 2 same (uneven padding)', depthwise: false, x: [2, 9, 8, 3], w: [4, 2, 3, 5], strides: [2, 2], dilations: [1, 1], pad: 'same' },
  { title: 'conv 3×5 stride 2×1 valid (unused tail rows)', depthwise: false, x: [3, 10, 9, 2], w: [3, 5, 2, 4], strides: [2, 1], dilations: [1, 1], pad: 'valid' },
  { title: 'conv 9×1 valid (a Scheme 2 vertical factor)', depthwise: false, x: [2, 12, 6, 4], w: [9, 1, 4, 3], strides: [1, 1], dilations: [1, 1], pad: 'valid' },
  { title: 'depthwise 3×3 multiplier 2 same', depthwise: true, x: [2, 7, 7, 3], w: [3, 3, 3, 2], strides: [1, 1], dilations: [1, 1], pad: 'same' },
  { title: 'depthwise 3×3 stride 2 valid', depthwise: true, x: [2, 9, 8, 2], w: [3, 3, 2, 1], strides: [2, 2], dilations: [1, 1], pad: 'valid' },
  { title: 'depthwise 3×2 dilation 2 same', depthwise: true, x: [2, 9, 9, 2], w: [3, 2, 2, 3], strides: [1, 1], dilations: [2, 2], pad: 'same' },
  { title: 'depthwise 2×3 dilation 2×1 valid', depthwise: true, x: [1, 10, 8, 3], w: [2, 3, 3, 2], strides: [1, 1], dilations: [2, 1], pad: 'valid' },
];

const size = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

function data(c: Case) {
  const rng = xoshiro128plus(c.x.concat(c.w).reduce((a, b) => a * 31 + b, 7));
  return { x: rng.gaussianArray(size(c.x)), w: rng.gaussianArray(size(c.w)) };
}

function forward(c: Case, x: tf.Tensor4D, w: tf.Tensor4D): tf.Tensor4D {
  return c.depthwise
    ? tf.depthwiseConv2d(x, w, c.strides, c.pad, 'NHWC', c.dilations)
    : tf.conv2d(x, w, c.strides, c.pad, 'NHWC', c.dilations);
}

/** The backward kernels of the case, called by name (tfjs' own gradient functions refuse dilation). */
function backward(c: Case, x: tf.Tensor4D, w: tf.Tensor4D, dy: tf.Tensor4D): { dx: Float32Array; dw: Float32Array } {
  const engine = tf.engine();
  const attrs = { strides: c.strides, pad: c.pad, dilations: c.dilations, dataFormat: 'NHWC' };
  const run = (name: string, inputs: tf.NamedTensorMap, extra: object) =>
    (engine.runKernel(name, inputs, { ...attrs, ...extra } as any) as tf.Tensor).dataSync() as Float32Array;
  if (c.depthwise) {
    return {
      dx: run('DepthwiseConv2dNativeBackpropInput', { dy, filter: w }, { inputShape: x.shape }),
      dw: run('DepthwiseConv2dNativeBackpropFilter', { x, dy }, { filterShape: w.shape }),
    };
  }
  return {
    dx: run('Conv2DBackpropInput', { dy, filter: w }, { inputShape: x.shape }),
    dw: run('Conv2DBackpropFilter', { x, dy }, { filterShape: w.shape }),
  };
}

function maxRelDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < a.length; i++) {
    diff = Math.max(diff, Math.abs(a[i] - b[i]));
    scale = Math.max(scale, Math.abs(b[i]));
  }
  assert.equal(a.length, b.length);
  return diff / scale;
}

async function onBackend<T extends tf.TensorContainer>(name: string, f: () => T): Promise<T> {
  await tf.setBackend(name);
  try {
    return tf.tidy(f);
  } finally {
    await tf.setBackend('wasm');
  }
}

describe('wasm backward kernels', () => {
  test('registering is idempotent', () => {
    assert.deepEqual(registerWasmGradients(), []);
    for (const name of ['Conv2DBackpropFilter', 'DepthwiseConv2dNativeBackpropInput', 'DepthwiseConv2dNativeBackpropFilter', 'MaxPoolGrad']) {
      assert.ok(tf.getKernel(name, 'wasm'), `${name} is registered on wasm`);
    }
  });

  test('the tensors the tape keeps share their data instead of copying it, and free it with the last of them', () => {
    const x = tf.randomNormal([2, 8, 8, 3], 0, 1, 'float32', 1);
    const bytes = tf.memory().numBytes;
    const kept = tf.clone(x);
    assert.equal(kept.dataId, x.dataId, 'a clone is the same data');
    assert.equal(tf.memory().numBytes, bytes + x.size * 4, 'tfjs counts it as a tensor of its own');
    x.dispose();
    assert.deepEqual(Array.from(kept.dataSync()).slice(0, 3).map(Number.isFinite), [true, true, true], 'the data outlives the first tensor');
    kept.dispose();
    assert.equal(tf.memory().numBytes, bytes - x.size * 4);
    // Gradients through ops whose inputs the tape keeps stay right.
    const w = tf.variable(tf.ones([3]));
    const { grads } = tf.variableGrads(() => tf.relu6(tf.ones([4, 3]).mul(w)).square().sum() as tf.Scalar, [w]);
    assert.deepEqual(Array.from(grads[w.name].dataSync()), [8, 8, 8]);
    tf.dispose([w, ...Object.values(grads)]);
  });

  for (const c of CASES) {
    test(`${c.title}: equals the cpu backend's kernels and finite differences`, async () => {
      const { x: xv, w: wv } = data(c);
      const compute = () => {
        const x = tf.tensor4d(xv, c.x as [number, number, number, number]);
        const w = tf.tensor4d(wv, c.w as [number, number, number, number]);
        const y = forward(c, x, w);
        const dy = tf.tensor4d(xoshiro128plus(3).gaussianArray(y.size), y.shape);
        return { ...backward(c, x, w, dy), dyv: dy.dataSync() as Float32Array, yShape: y.shape };
      };
      const wasm = tf.tidy(compute);
      const cpu = await onBackend('cpu', compute);
      // The cpu backend's depthwise backward kernels ignore dilation (tfjs never calls them with
      // it): dilated cases are checked against finite differences only.
      if (c.dilations[0] === 1 && c.dilations[1] === 1) {
        const dxErr = maxRelDiff(wasm.dx, cpu.dx);
        const dwErr = maxRelDiff(wasm.dw, cpu.dw);
        assert.ok(dxErr < 1e-5, `input gradient differs from cpu by ${dxErr.toExponential(2)}`);
        assert.ok(dwErr < 1e-5, `filter gradient differs from cpu by ${dwErr.toExponential(2)}`);
      }

      // Central differences of L = Σ dy·conv(x, w) at a few entries of x and of w, on wasm.
      const loss = (x: Float32Array, w: Float32Array) => tf.tidy(() => {
        const y = forward(c, tf.tensor4d(x, c.x as any), tf.tensor4d(w, c.w as any));
        return tf.sum(y.mul(tf.tensor(wasm.dyv, wasm.yShape))).dataSync()[0];
      });
      const rng = xoshiro128plus(11);
      for (const [which, values, grad] of [['x', xv, wasm.dx], ['w', wv, wasm.dw]] as const) {
        for (let k = 0; k < 16; k++) {
          const i = Math.floor(rng.uniform() * values.length);
          const shifted = (delta: number) => {
            const v = Float32Array.from(values);
            v[i] += delta;
            return which === 'x' ? loss(v, wv) : loss(xv, v);
          };
          const numeric = (shifted(0.5) - shifted(-0.5)) / 1;
          assert.ok(Math.abs(numeric - grad[i]) < 1e-3 * (1 + Math.abs(numeric)), `d/d${which}[${i}]: kernel ${grad[i]}, finite difference ${numeric}`);
        }
      }
    });
  }

  const POOLS: [number[], number, number, 'same' | 'valid'][] = [
    [[2, 6, 6, 5], 2, 2, 'valid'], [[1, 7, 7, 3], 3, 2, 'same'], [[2, 5, 6, 4], 3, 1, 'valid'], [[1, 6, 5, 8], 2, 2, 'same'],
  ];
  for (const [shape, pool, stride, pad] of POOLS) {
    test(`max pooling ${pool}×${pool} stride ${stride} ${pad} on ${shape.join('×')}: gradient equals the cpu backend's`, async () => {
      const xv = xoshiro128plus(pool * 10 + stride).gaussianArray(size(shape));
      const grad = () => {
        const x = tf.tensor4d(xv, shape as [number, number, number, number]);
        const f = (t: tf.Tensor4D) => tf.maxPool(t, pool, stride, pad);
        const weights = tf.range(1, f(x).size + 1).reshape(f(x).shape);
        return tf.grad((t: tf.Tensor) => f(t as tf.Tensor4D).mul(weights).sum())(x).dataSync() as Float32Array;
      };
      const wasm = tf.tidy(grad);
      const cpu = await onBackend('cpu', grad);
      assert.ok(maxRelDiff(wasm, cpu) < 1e-6, `max pooling gradient differs from cpu by ${maxRelDiff(wasm, cpu).toExponential(2)}`);
    });
  }

  test('tf.variableGrads through stock layers (conv, separable, depthwise, pooling, dense) matches cpu', async () => {
    const build = () => {
      const input = tf.input({ shape: [12, 12, 3] });
      let h = tf.layers.conv2d({ filters: 4, kernelSize: 3, strides: 2, padding: 'same', activation: 'relu', kernelInitializer: tf.initializers.glorotNormal({ seed: 1 }) }).apply(input) as tf.SymbolicTensor;
      h = tf.layers.separableConv2d({ filters: 5, kernelSize: 3, depthMultiplier: 2, padding: 'same', depthwiseInitializer: tf.initializers.glorotNormal({ seed: 2 }), pointwiseInitializer: tf.initializers.glorotNormal({ seed: 3 }) }).apply(h) as tf.SymbolicTensor;
      h = tf.layers.depthwiseConv2d({ kernelSize: 3, depthwiseInitializer: tf.initializers.glorotNormal({ seed: 4 }) }).apply(h) as tf.SymbolicTensor;
      h = tf.layers.maxPooling2d({ poolSize: 2 }).apply(h) as tf.SymbolicTensor;
      h = tf.layers.flatten().apply(h) as tf.SymbolicTensor;
      const out = tf.layers.dense({ units: 3, kernelInitializer: tf.initializers.glorotNormal({ seed: 5 }) }).apply(h) as tf.SymbolicTensor;
      return tf.model({ inputs: input, outputs: out });
    };
    const x = xoshiro128plus(5).gaussianArray(4 * 12 * 12 * 3);
    const grads = () => {
      const model = build();
      const input = tf.tensor4d(x, [4, 12, 12, 3]);
      const { grads } = tf.variableGrads(() => (model.apply(input) as tf.Tensor).square().sum() as tf.Scalar);
      const out = model.trainableWeights.map((w) => grads[(w.read() as tf.Variable).name].dataSync() as Float32Array);
      model.dispose();
      return out;
    };
    const wasm = tf.tidy(grads);
    const cpu = await onBackend('cpu', grads);
    assert.equal(wasm.length, 9);
    wasm.forEach((g, i) => assert.ok(maxRelDiff(g, cpu[i]) < 1e-4, `variable ${i} gradient differs from cpu by ${maxRelDiff(g, cpu[i]).toExponential(2)}`));
  });
});
