/**
 * The tensor operations data reconstruction is built from, chosen for the wasm backend, which has
 * no Conv2DBackpropFilter and no depthwise backprop kernels and whose matMul with transposeA or
 * transposeB set is ~10× slower than the plain product (no XNNPACK path). Measured on this 2-core
 * machine, conv2 of the character CNN (16×16×48 → 8×8×128, 9×9), rank 21, 32 images:
 *
 *   vertical conv forward: tf.conv2d 6 ms · 9 patch columns (slice) + concat + matMul 21 ms
 *   filter gradient:       batch↔channel conv (below) 11 ms · patch columns + matMul 24 ms · conv3d grads 214 ms
 *   input gradient:        flipped-kernel conv2d 9 ms · tf.conv2dTranspose 33 ms
 *
 * (tfjs' Slice and Concat run in JavaScript on wasm, so patch extraction is the slow part of a
 * patch+matMul forward.) So every factored layer runs forward as stock convolutions on explicitly
 * padded input, and its gradients are computed by hand from the same fast kernels:
 *
 *  - input gradient of a conv = a stride-1 conv of the zero-stuffed, padded output gradient with
 *    the spatially flipped, in/out-transposed kernel;
 *  - filter gradient of a conv = a conv of the input with the output gradient as the kernel, batch
 *    and channel axes swapped (stride and dilation trade places), then cropped to the kernel size.
 *
 * The patch+matMul form is still used where a matrix is the point: the design matrix of the
 * last factor's exact least-squares solve (see `patchColumns`).
 */
import * as tf from '@tensorflow/tfjs';
import type { ConvGeometry } from '../model/cost.js';

export type Pair = [number, number];

/** TensorFlow 'same' padding of one axis: [before, after]. */
function samePad(input: number, output: number, k: number, s: number, d: number): Pair {
  const total = Math.max((output - 1) * s + (k - 1) * d + 1 - input, 0);
  const before = Math.floor(total / 2);
  return [before, total - before];
}

/** Padding of the layer's input: [[top, bottom], [left, right]] (zeros for 'valid'). */
export function paddingOf(g: ConvGeometry): [Pair, Pair] {
  if (g.padding === 'valid') return [[0, 0], [0, 0]];
  return [samePad(g.inH, g.outH, g.kh, g.sh, g.dh), samePad(g.inW, g.outW, g.kw, g.sw, g.dw)];
}

/** Zero-pads height and width of an NHWC tensor (no-op for zero padding). */
export function pad2d(x: tf.Tensor4D, h: Pair, w: Pair): tf.Tensor4D {
  if (h[0] === 0 && h[1] === 0 && w[0] === 0 && w[1] === 0) return x.clone();
  return tf.pad(x, [[0, 0], h, w, [0, 0]]);
}

/** Crops height and width of an NHWC tensor. */
export function crop2d(x: tf.Tensor4D, h: Pair, w: Pair): tf.Tensor4D {
  const [b, hh, ww, c] = x.shape;
  if (h[0] === 0 && h[1] === 0 && w[0] === 0 && w[1] === 0) return x.clone();
  return tf.slice(x, [0, h[0], w[0], 0], [b, hh - h[0] - h[1], ww - w[0] - w[1], c]);
}

/** A plain matMul; with `transposeA`, the transpose is made explicitly (see the top of this file). */
export function matMulT(a: tf.Tensor2D, b: tf.Tensor2D): tf.Tensor2D {
  // aᵀb: transpose whichever side is smaller; (bᵀa)ᵀ is cheaper when b has fewer columns.
  return tf.tidy(() => {
    if (a.shape[1] <= b.shape[1]) return tf.matMul(tf.transpose(a) as tf.Tensor2D, b);
    return tf.transpose(tf.matMul(tf.transpose(b) as tf.Tensor2D, a)) as tf.Tensor2D;
  });
}

/** a·bᵀ with b small (a weight): transpose b explicitly. */
export function matMulBT(a: tf.Tensor2D, b: tf.Tensor2D): tf.Tensor2D {
  return tf.tidy(() => tf.matMul(a, tf.transpose(b)));
}

/** Inserts s−1 zeros between neighbours along height and width (s = 1: unchanged). */
export function interleaveZeros(x: tf.Tensor4D, s: Pair): tf.Tensor4D {
  return tf.tidy(() => {
    let y = x;
    const [b, h, w, c] = y.shape;
    if (s[0] > 1) {
      const z = tf.zeros([b, h, s[0] - 1, w, c]);
      y = tf.concat([y.reshape([b, h, 1, w, c]), z], 2).reshape([b, h * s[0], w, c]).slice([0, 0, 0, 0], [b, (h - 1) * s[0] + 1, w, c]) as tf.Tensor4D;
    }
    if (s[1] > 1) {
      const [b2, h2, w2, c2] = y.shape;
      const z = tf.zeros([b2, h2, w2, s[1] - 1, c2]);
      y = tf.concat([y.reshape([b2, h2, w2, 1, c2]), z], 3).reshape([b2, h2, w2 * s[1], c2]).slice([0, 0, 0, 0], [b2, h2, (w2 - 1) * s[1] + 1, c2]) as tf.Tensor4D;
    }
    return y as tf.Tensor4D;
  });
}

/** VALID conv of an already padded input. */
export function conv(x: tf.Tensor4D, w: tf.Tensor4D, s: Pair, d: Pair): tf.Tensor4D {
  return tf.conv2d(x, w, s, 'valid', 'NHWC', d);
}

/** VALID depthwise conv of an already padded input. */
export function dwConv(x: tf.Tensor4D, w: tf.Tensor4D, s: Pair, d: Pair): tf.Tensor4D {
  return tf.depthwiseConv2d(x, w, s, 'valid', 'NHWC', d);
}

/** Zero-stuffed, padded output gradient: the input of the transposed conv. */
function transposedInput(dy: tf.Tensor4D, k: Pair, s: Pair, d: Pair, inHW: Pair): tf.Tensor4D {
  const [, oh, ow] = dy.shape;
  const pads = (i: 0 | 1, o: number): Pair => [(k[i] - 1) * d[i], inHW[i] - (o - 1) * s[i] - 1];
  return pad2d(interleaveZeros(dy, s), pads(0, oh), pads(1, ow)); // called inside tf.tidy
}

/**
 * The kernel with its spatial taps in reverse order (both axes flipped), as a product with the
 * anti-diagonal permutation: wasm's Reverse runs ~30× slower than this matMul (2.2 ms for conv3's
 * 1×8×52×128 factor).
 */
export function flipSpatial(w: tf.Tensor4D): tf.Tensor4D {
  return tf.tidy(() => {
    const [kh, kw, c, o] = w.shape;
    const taps = kh * kw;
    if (taps === 1) return w.clone();
    const reversal = tf.tidy(() => tf.reverse(tf.eye(taps), [1]) as tf.Tensor2D);
    return tf.matMul(reversal, w.reshape([taps, c * o])).reshape([kh, kw, c, o]) as tf.Tensor4D;
  });
}

/** The leading [k0, k1] of height and width; no copy when that is the whole (wasm copies a full-size Slice slowly). */
function leading(g: tf.Tensor4D, k0: number, k1: number): tf.Tensor4D {
  const [a, h, w, b] = g.shape;
  return h === k0 && w === k1 ? g : g.slice([0, 0, 0, 0], [a, k0, k1, b]);
}

/** Gradient of conv(x, w, s, d) with respect to x (padded input of height×width `inHW`). */
export function convInputGrad(dy: tf.Tensor4D, w: tf.Tensor4D, s: Pair, d: Pair, inHW: Pair): tf.Tensor4D {
  return tf.tidy(() => {
    const [kh, kw] = w.shape;
    const padded = transposedInput(dy, [kh, kw], s, d, inHW);
    const flipped = flipSpatial(w).transpose([0, 1, 3, 2]) as tf.Tensor4D;
    return conv(padded, flipped, [1, 1], d);
  });
}

/** Gradient of dwConv(x, w, s, d) with respect to x; w is [kh, kw, C, M]. */
export function dwInputGrad(dy: tf.Tensor4D, w: tf.Tensor4D, s: Pair, d: Pair, inHW: Pair): tf.Tensor4D {
  return tf.tidy(() => {
    const [kh, kw, c, m] = w.shape;
    const padded = transposedInput(dy, [kh, kw], s, d, inHW);
    // Each (c, m) output channel flows back into input channel c: a multiplier-1 depthwise conv
    // over the C·M channels with the flipped filters, then a sum over m.
    const flipped = flipSpatial(w).reshape([kh, kw, c * m, 1]) as tf.Tensor4D;
    const g = dwConv(padded, flipped, [1, 1], d);
    const [b, h, ww] = g.shape;
    return g.reshape([b, h, ww, c, m]).sum(4) as tf.Tensor4D;
  });
}

/**
 * Gradient of conv(x, w, s, d) with respect to w (kernel size k): Σ over batch and positions of
 * x[b, y·s + i·d, x·s + j·d, c] · dy[b, y, x, o], computed as one conv whose batch is the input
 * channels, whose channels are the batch, and whose kernel is dy.
 */
export function convFilterGrad(x: tf.Tensor4D, dy: tf.Tensor4D, k: Pair, s: Pair, d: Pair): tf.Tensor4D {
  return tf.tidy(() => {
    const xt = x.transpose([3, 1, 2, 0]) as tf.Tensor4D; // C, H, W, B
    const f = dy.transpose([1, 2, 0, 3]) as tf.Tensor4D; // oh, ow, B, O
    const g = tf.conv2d(xt, f, d, 'valid', 'NHWC', s); // C, ≥kh, ≥kw, O
    return leading(g, k[0], k[1]).transpose([1, 2, 0, 3]) as tf.Tensor4D;
  });
}

/** Gradient of dwConv(x, w, s, d) with respect to w ([k0, k1, C, M]), the same way per channel. */
export function dwFilterGrad(x: tf.Tensor4D, dy: tf.Tensor4D, k: Pair, s: Pair, d: Pair, m: number): tf.Tensor4D {
  return tf.tidy(() => {
    const [b, h, w, c] = x.shape;
    const [, oh, ow] = dy.shape;
    const xt = x.transpose([1, 2, 0, 3]).reshape([1, h, w, b * c]) as tf.Tensor4D; // channels (b, c)
    const f = dy.reshape([b, oh, ow, c, m]).transpose([1, 2, 0, 3, 4]).reshape([oh, ow, b * c, m]) as tf.Tensor4D;
    const g = tf.depthwiseConv2d(xt, f, d, 'valid', 'NHWC', s); // 1, ≥k0, ≥k1, (b, c, m)
    return leading(g, k[0], k[1]).reshape([k[0], k[1], b, c, m]).sum(2) as tf.Tensor4D;
  });
}

/**
 * Patches along one axis as a matrix: for a padded NHWC x and kernel taps t = 0..k−1 along `axis`
 * (1 = height, 2 = width) with stride s and dilation d, the (B·H'·W', k·C) matrix whose columns
 * (t·C + c) hold x at tap t. Slices are taken on 2-D views so each copy is one long run.
 */
export function patchColumns(x: tf.Tensor4D, axis: 1 | 2, k: number, s: number, d: number, out: number): tf.Tensor2D {
  return tf.tidy(() => {
    const [b, h, w, c] = x.shape;
    const parts: tf.Tensor2D[] = [];
    for (let t = 0; t < k; t++) {
      let part: tf.Tensor;
      if (axis === 2) {
        const rows = x.reshape([b * h, w * c]);
        if (s === 1) part = rows.slice([0, t * d * c], [b * h, out * c]);
        else {
          const need = t * d + out * s;
          const padded = need > w ? tf.pad(rows, [[0, 0], [0, (need - w) * c]]) : rows;
          part = padded.slice([0, t * d * c], [b * h, out * s * c]).reshape([b * h * out, s * c]).slice([0, 0], [b * h * out, c]);
        }
        parts.push(part.reshape([b * h * out, c]));
      } else {
        const rows = x.reshape([b, h * w * c]);
        if (s === 1) part = rows.slice([0, t * d * w * c], [b, out * w * c]);
        else {
          const need = t * d + out * s;
          const padded = need > h ? tf.pad(rows, [[0, 0], [0, (need - h) * w * c]]) : rows;
          part = padded.slice([0, t * d * w * c], [b, out * s * w * c]).reshape([b * out, s * w * c]).slice([0, 0], [b * out, w * c]);
        }
        parts.push(part.reshape([b * out * w, c]));
      }
    }
    return (parts.length === 1 ? parts[0] : tf.concat(parts, 1)) as tf.Tensor2D;
  });
}

/** A tensor's values as float64 (for the exact solves), disposing the tensor. */
export function toF64(t: tf.Tensor): Float64Array {
  const d = Float64Array.from(t.dataSync());
  t.dispose();
  return d;
}

/** Block-diagonal gram (nb blocks of m×m, given as (nb, m, m)) as a dense (nb·m)² matrix. */
export function blockDiagonal(blocks: Float64Array, nb: number, m: number): Float64Array {
  const n = nb * m;
  const out = new Float64Array(n * n);
  for (let b = 0; b < nb; b++) {
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < m; j++) out[(b * m + i) * n + b * m + j] = blocks[(b * m + i) * m + j];
    }
  }
  return out;
}

/** The original conv layer's linear response (no bias, no activation) as rows × N. */
export function linearResponse(x: tf.Tensor4D, kernel: tf.Tensor4D, g: ConvGeometry): tf.Tensor2D {
  return tf.tidy(() => {
    const [h, w] = paddingOf(g);
    return tf.conv2d(pad2d(x, h, w), kernel, [g.sh, g.sw], 'valid', 'NHWC', [g.dh, g.dw]).reshape([-1, g.N]);
  });
}
