import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { useBackend } from '../../src/runtime/backend.js';
import { conv2dMacs, convGeometry, layerMacs, modelMacs } from '../../src/model/cost.js';
import { breakEvenRank, scheme1, scheme2 } from '../../src/schemes/index.js';
import { listLayers, type LayerInfo } from '../../src/model/layers.js';

before(async () => {
  await useBackend('wasm');
});

/** The listed info of the single non-input layer `layer` applied to `inputShape`. */
function single(layer: tf.layers.Layer, inputShape: number[]): LayerInfo {
  const input = tf.input({ shape: inputShape });
  const model = tf.model({ inputs: input, outputs: layer.apply(input) as tf.SymbolicTensor });
  return listLayers(model)[0];
}

/** Output size along one axis, by the TF rule, computed independently of tfjs. */
function outSize(n: number, k: number, s: number, d: number, padding: 'same' | 'valid'): number {
  const effective = (k - 1) * d + 1;
  return padding === 'same' ? Math.ceil(n / s) : Math.ceil((n - effective + 1) / s);
}

describe('cost model: Conv2D', () => {
  const cases: { k: [number, number]; s: number; d: number; padding: 'same' | 'valid'; bias: boolean }[] = [];
  for (const padding of ['same', 'valid'] as const) {
    for (const [s, d] of [[1, 1], [2, 1], [1, 2]]) {
      for (const k of [[3, 3], [5, 2], [1, 1]] as [number, number][]) cases.push({ k, s, d, padding, bias: s === 1 });
    }
  }
  for (const c of cases) {
    test(`kernel ${c.k.join('×')} stride ${c.s} dilation ${c.d} ${c.padding}${c.bias ? '' : ' no bias'}`, () => {
      const H = 17;
      const W = 14;
      const C = 6;
      const N = 10;
      const info = single(
        tf.layers.conv2d({ filters: N, kernelSize: c.k, strides: c.s, dilationRate: c.d, padding: c.padding, useBias: c.bias }),
        [H, W, C],
      );
      const oh = outSize(H, c.k[0], c.s, c.d, c.padding);
      const ow = outSize(W, c.k[1], c.s, c.d, c.padding);
      assert.equal(layerMacs(info), oh * ow * N * c.k[0] * c.k[1] * C);
      assert.equal(info.params, c.k[0] * c.k[1] * C * N + (c.bias ? N : 0));
      const g = convGeometry(info);
      assert.deepEqual([g.outH, g.outW], [oh, ow]);
    });
  }
});

describe('cost model: other layers', () => {
  test('DepthwiseConv2D with multiplier 2, stride 2, same', () => {
    const info = single(tf.layers.depthwiseConv2d({ kernelSize: 3, depthMultiplier: 2, strides: 2, padding: 'same' }), [9, 9, 4]);
    assert.equal(layerMacs(info), 5 * 5 * 4 * 2 * 9);
  });
  test('SeparableConv2D: depthwise plus pointwise', () => {
    const info = single(tf.layers.separableConv2d({ filters: 7, kernelSize: [3, 5], depthMultiplier: 3, padding: 'valid' }), [10, 12, 4]);
    const oh = 8;
    const ow = 8;
    assert.equal(layerMacs(info), oh * ow * 4 * 3 * 15 + oh * ow * 4 * 3 * 7);
  });
  test('Dense on a flat and on a rank-3 input', () => {
    assert.equal(layerMacs(single(tf.layers.dense({ units: 5 }), [12])), 60);
    assert.equal(layerMacs(single(tf.layers.dense({ units: 5 }), [3, 12])), 180);
  });
  test('cheap layers count zero, and the total sums known layers', () => {
    const model = tf.sequential({
      layers: [
        tf.layers.conv2d({ inputShape: [8, 8, 3], filters: 4, kernelSize: 3 }),
        tf.layers.batchNormalization(),
        tf.layers.maxPooling2d({ poolSize: 2 }),
        tf.layers.flatten(),
        tf.layers.dense({ units: 2, activation: 'softmax' }),
      ],
    });
    const layers = listLayers(model);
    assert.deepEqual(layers.map(layerMacs), [6 * 6 * 4 * 9 * 3, 0, 0, 0, 36 * 2]);
    assert.deepEqual(modelMacs(layers), { total: 6 * 6 * 4 * 27 + 72, unknown: [] });
  });
});

describe('cost model: schemes', () => {
  const g = { kh: 9, kw: 9, sh: 1, sw: 1, dh: 1, dw: 1, padding: 'valid' as const, inH: 16, inW: 16, C: 48, outH: 8, outW: 8, N: 128, useBias: true };
  test('Scheme 2 MACs, params, full and break-even rank (the paper\'s conv2)', () => {
    assert.equal(conv2dMacs(g), 8 * 8 * 128 * 81 * 48);
    // vertical 9×1 keeps the 16-wide input: 8×16 outputs; horizontal 1×9 gives 8×8.
    assert.equal(scheme2.macs(g, 10), 8 * 16 * 10 * 9 * 48 + 8 * 8 * 128 * 9 * 10);
    assert.equal(scheme2.params(g, 10), 9 * 48 * 10 + 9 * 10 * 128 + 128);
    assert.equal(scheme2.fullRank(g), Math.min(48 * 9, 9 * 128));
    const k = breakEvenRank(scheme2, g);
    assert.ok(scheme2.macs(g, k) < conv2dMacs(g));
    assert.ok(scheme2.macs(g, k + 1) >= conv2dMacs(g));
  });
  test('Scheme 1 MACs, plain and separable', () => {
    assert.equal(scheme1('per-channel', false).macs(g, 4), 8 * 8 * 48 * 4 * 81 + 8 * 8 * 48 * 4 * 128);
    assert.equal(scheme1('per-channel', true).macs(g, 4), 8 * 16 * 48 * 4 * 9 + 8 * 8 * 48 * 4 * 9 + 8 * 8 * 48 * 4 * 128);
  });
});
