/**
 * Weight encodings as the tfjs-converter writes them, so stock tf.loadLayersModel dequantizes
 * them: float32 as is; float16 halves (`quantization: {dtype: 'float16'}`); uint8 / uint16 affine
 * per tensor, value = q·scale + min, with the range widened to hold 0 and min nudged so that 0 is
 * exact (`quantization: {dtype, min, scale}`).
 */
import type * as tf from '@tensorflow/tfjs';
import type { ModelFiles } from './files.js';

export type Encoding = 'float32' | 'float16' | 'uint8' | 'uint16';

/** The encodings `compress --quantize` offers (none = float32). */
export const QUANTIZE_CHOICES = ['none', 'float16', 'uint8'] as const;

export const encodingOfFlag = (flag: (typeof QUANTIZE_CHOICES)[number]): Encoding => (flag === 'none' ? 'float32' : flag);

const encodingOf = (spec: tf.io.WeightsManifestEntry): Encoding => (spec.quantization?.dtype as Encoding | undefined) ?? 'float32';

/** The encoding holding most of the model's parameters (ties go to the more precise one). */
export function dominantEncoding(files: ModelFiles): Encoding {
  const counts = new Map<Encoding, number>();
  for (const { spec } of files.weights) {
    counts.set(encodingOf(spec), (counts.get(encodingOf(spec)) ?? 0) + spec.shape.reduce((a, b) => a * b, 1));
  }
  const precision: Encoding[] = ['float32', 'uint16', 'float16', 'uint8'];
  let best: Encoding = 'float32';
  for (const e of precision) if ((counts.get(e) ?? 0) > (counts.get(best) ?? 0)) best = e;
  return best;
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** IEEE float32 → float16 bits, rounding to nearest even (subnormals, ±Inf and NaN included). */
export function toFloat16(value: number): number {
  f32[0] = value;
  const x = u32[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  const mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    const m = mant | 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    const rest = m & ((1 << shift) - 1);
    let q = m >>> shift;
    if (rest > half || (rest === half && q & 1)) q++;
    return sign | q;
  }
  let q = (e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && q & 1)) q++; // may carry into the exponent, as it should
  return sign | q;
}

/** The bytes and manifest quantization of float32 `values` in `encoding`. */
export function encodeValues(values: Float32Array, encoding: Encoding): { bytes: Uint8Array; quantization?: tf.io.WeightsManifestEntry['quantization'] } {
  if (encoding === 'float32') return { bytes: new Uint8Array(values.buffer, values.byteOffset, values.byteLength) };
  if (encoding === 'float16') {
    const half = new Uint16Array(values.length);
    for (let i = 0; i < values.length; i++) half[i] = toFloat16(values[i]);
    return { bytes: new Uint8Array(half.buffer), quantization: { dtype: 'float16' } };
  }
  const levels = encoding === 'uint8' ? 255 : 65535;
  let lo = 0;
  let hi = 0;
  for (const v of values) {
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  const scale = (hi - lo) / levels || 1;
  const min = -Math.round(-lo / scale) * scale;
  const q = encoding === 'uint8' ? new Uint8Array(values.length) : new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) q[i] = Math.min(levels, Math.max(0, Math.round((values[i] - min) / scale)));
  return { bytes: new Uint8Array(q.buffer), quantization: { dtype: encoding, min, scale } };
}
