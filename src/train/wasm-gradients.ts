/**
 * The backward kernels a whole-network backward pass of stock layers needs and the wasm backend of
 * tfjs 4.22 lacks, built from forward operations (src/linalg/conv-ops.ts) and registered under
 * the standard kernel names, so tf.grad, tf.variableGrads and the stock optimizers work on wasm.
 *
 * Missing on wasm (found by running tf.grad through each layer type): Conv2DBackpropFilter
 * (Conv2D, Conv1D, SeparableConv2D, Conv2DTranspose), DepthwiseConv2dNativeBackpropInput and
 * DepthwiseConv2dNativeBackpropFilter (DepthwiseConv2D, SeparableConv2D). Everything else a CNN
 * uses (pooling, activations, batch norm, dense, resize, pad, concat) already has its gradient,
 * but wasm's MaxPoolGrad routes the gradient to the wrong inputs when there are several channels
 * (e.g. 2×6×6×5, 2×2 pool: off by whole dy entries against the cpu backend), so it is replaced too.
 * tfjs refuses gradients of dilated convolutions on every backend (its gradient functions assert
 * dilation 1 before any kernel runs); the depthwise kernels here honour dilation all the same.
 * Identity is replaced too, by one that shares its input's data (see sharedIdentity).
 */
import * as tf from '@tensorflow/tfjs';
import { convFilterGrad, crop2d, dwFilterGrad, dwInputGrad, pad2d, interleaveZeros, type Pair } from '../linalg/conv-ops.js';

type ConvInfo = ReturnType<typeof tf.backend_util.computeConv2DInfo>;

/** The conv's geometry as tfjs computes it (padding resolved to explicit amounts). */
function geometry(xShape: number[], filterShape: number[], attrs: any, depthwise: boolean): ConvInfo {
  return tf.backend_util.computeConv2DInfo(
    xShape as [number, number, number, number], filterShape as [number, number, number, number],
    attrs.strides, attrs.dilations ?? 1, attrs.pad, attrs.dimRoundingMode, depthwise,
  );
}

const pads = (c: ConvInfo): [Pair, Pair] => [[c.padInfo.top, c.padInfo.bottom], [c.padInfo.left, c.padInfo.right]];
const strides = (c: ConvInfo): Pair => [c.strideHeight, c.strideWidth];
const dilations = (c: ConvInfo): Pair => [c.dilationHeight, c.dilationWidth];

/** A kernel input as a tensor (ops pass tensors; a bare TensorInfo gets a handle). */
function asTensor<T extends tf.Tensor>(t: tf.TensorInfo | undefined): T {
  return (t instanceof tf.Tensor ? t : tf.engine().makeTensorFromTensorInfo(t!)) as T;
}

/** dL/dW of a conv: the input, padded as tfjs pads it, correlated with dy. */
function conv2dBackpropFilter({ inputs, attrs }: { inputs: tf.NamedTensorInfoMap; attrs?: tf.NamedAttrMap }): tf.Tensor {
  const a = attrs as any;
  return tf.tidy(() => {
    const nchw = a.dataFormat === 'NCHW';
    let x = asTensor<tf.Tensor4D>(inputs.x);
    let dy = asTensor<tf.Tensor4D>(inputs.dy);
    if (nchw) {
      x = x.transpose([0, 2, 3, 1]);
      dy = dy.transpose([0, 2, 3, 1]);
    }
    const c = geometry(x.shape, a.filterShape, a, false);
    const [h, w] = pads(c);
    return convFilterGrad(pad2d(x, h, w), dy, [c.filterHeight, c.filterWidth], strides(c), [1, 1]);
  });
}

function depthwiseBackpropFilter({ inputs, attrs }: { inputs: tf.NamedTensorInfoMap; attrs?: tf.NamedAttrMap }): tf.Tensor {
  const a = attrs as any;
  return tf.tidy(() => {
    const x = asTensor<tf.Tensor4D>(inputs.x);
    const dy = asTensor<tf.Tensor4D>(inputs.dy);
    const c = geometry(x.shape, a.filterShape, a, true);
    const [h, w] = pads(c);
    return dwFilterGrad(pad2d(x, h, w), dy, [c.filterHeight, c.filterWidth], strides(c), dilations(c), a.filterShape[3]);
  });
}

/** dL/dx of a depthwise conv: the gradient of the padded input, with the padding cropped off. */
function depthwiseBackpropInput({ inputs, attrs }: { inputs: tf.NamedTensorInfoMap; attrs?: tf.NamedAttrMap }): tf.Tensor {
  const a = attrs as any;
  return tf.tidy(() => {
    const dy = asTensor<tf.Tensor4D>(inputs.dy);
    const filter = asTensor<tf.Tensor4D>(inputs.filter);
    const c = geometry(a.inputShape, filter.shape, a, true);
    const [h, w] = pads(c);
    const padded: Pair = [c.inHeight + h[0] + h[1], c.inWidth + w[0] + w[1]];
    return crop2d(dwInputGrad(dy, filter, strides(c), dilations(c), padded), h, w);
  });
}

/**
 * dL/dx of max pooling: each window's dy goes to the first input (in window order) equal to the
 * window's maximum — for each window offset (i, j), the strided slice of the padded input at that
 * offset is compared with the output, and the matching dy are zero-stuffed back into place.
 */
function maxPoolBackprop({ inputs, attrs }: { inputs: tf.NamedTensorInfoMap; attrs?: tf.NamedAttrMap }): tf.Tensor {
  const a = attrs as any;
  return tf.tidy(() => {
    const dy = asTensor<tf.Tensor4D>(inputs.dy);
    const x = asTensor<tf.Tensor4D>(inputs.input);
    const y = asTensor<tf.Tensor4D>(inputs.output);
    const c = tf.backend_util.computePool2DInfo(x.shape, a.filterSize, a.strides, 1, a.pad, a.dimRoundingMode);
    const [h, w] = pads(c);
    const [b, oh, ow, ch] = dy.shape;
    const [sh, sw] = strides(c);
    // Padding never wins a window: pad with the lowest value.
    const padded = tf.pad(x, [[0, 0], h, w, [0, 0]], -Infinity) as tf.Tensor4D;
    const [, ph, pw] = padded.shape;
    let taken = tf.zerosLike(dy).cast('bool');
    let dx = tf.zeros(padded.shape) as tf.Tensor4D;
    for (let i = 0; i < c.filterHeight; i++) {
      for (let j = 0; j < c.filterWidth; j++) {
        const at = tf.stridedSlice(padded, [0, i, j, 0], [b, i + (oh - 1) * sh + 1, j + (ow - 1) * sw + 1, ch], [1, sh, sw, 1]);
        const here = tf.logicalAnd(tf.equal(at, y), tf.logicalNot(taken));
        taken = tf.logicalOr(taken, here);
        const routed = interleaveZeros(tf.where(here, dy, tf.zerosLike(dy)) as tf.Tensor4D, [sh, sw]);
        const [, rh, rw] = routed.shape;
        dx = dx.add(tf.pad(routed, [[0, 0], [i, ph - i - rh], [j, pw - j - rw], [0, 0]]));
      }
    }
    return crop2d(dx, h, w);
  });
}

/**
 * wasm's Identity copies the tensor. tfjs runs it on every input and output a gradient may need
 * while the tape records (its engine keeps a clone of each), so a 224-px forward pass under the tape
 * copied gigabytes in JavaScript, on one thread, and held every copy. Sharing the data under a
 * reference count, as wasm's own Reshape does (and the cpu backend's Identity), makes keeping free:
 * no kernel writes a tensor in place.
 */
function sharedIdentity({ inputs, backend }: { inputs: tf.NamedTensorInfoMap; backend: unknown }): tf.TensorInfo {
  const x = inputs.x as tf.TensorInfo;
  (backend as { incRef(dataId: tf.DataId): void }).incRef(x.dataId);
  return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
}

const KERNELS: [string, tf.KernelFunc][] = [
  ['Identity', sharedIdentity as tf.KernelFunc],
  ['Conv2DBackpropFilter', conv2dBackpropFilter as tf.KernelFunc],
  ['DepthwiseConv2dNativeBackpropFilter', depthwiseBackpropFilter as tf.KernelFunc],
  ['DepthwiseConv2dNativeBackpropInput', depthwiseBackpropInput as tf.KernelFunc],
  ['MaxPoolGrad', maxPoolBackprop as tf.KernelFunc],
];

/** Registers the kernels above on wasm, in place of its own (idempotent); returns the names registered. */
export function registerWasmGradients(): string[] {
  const added: string[] = [];
  for (const [kernelName, kernelFunc] of KERNELS) {
    const current = tf.getKernel(kernelName, 'wasm');
    if (current?.kernelFunc === kernelFunc) continue;
    if (current) tf.unregisterKernel(kernelName, 'wasm');
    tf.registerKernel({ kernelName, backendName: 'wasm', kernelFunc });
    added.push(kernelName);
  }
  return added;
}
