/**
 * Resizing images to the model's input the way the model's own pipeline did: sharp's resampler
 * (the default), or tfjs' resizeBilinear / resizeNearestNeighbor on the decoded full-size image,
 * for models trained or served with `tf.image.resize*`.
 */
import * as tf from '@tensorflow/tfjs';

export const RESIZE_METHODS = ['sharp', 'bilinear', 'nearest'] as const;
export type ResizeMethod = (typeof RESIZE_METHODS)[number];

export interface PixelGrid {
  height: number;
  width: number;
  channels: number;
}

/**
 * Resizes height×width×channels pixels with tfjs' own kernels and their defaults (alignCorners and
 * halfPixelCenters false), so the values are those of `tf.image.resizeBilinear(x, [h, w])` or
 * `tf.image.resizeNearestNeighbor(x, [h, w])` in the user's code.
 */
export function resizeLikeTfjs(
  pixels: Uint8Array, from: PixelGrid, to: { height: number; width: number }, method: 'bilinear' | 'nearest',
): Float32Array {
  const resized = tf.tidy(() => {
    const x = tf.tensor3d(Float32Array.from(pixels), [from.height, from.width, from.channels]);
    const size: [number, number] = [to.height, to.width];
    return method === 'bilinear' ? tf.image.resizeBilinear(x, size) : tf.image.resizeNearestNeighbor(x, size);
  });
  const values = resized.dataSync() as Float32Array;
  resized.dispose();
  return values;
}
