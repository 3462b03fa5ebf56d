/**
 * Augmentation of natural images for fine-tuning: a random shift (a crop of the image padded with
 * black by a few pixels on each side) and a random horizontal flip, applied to decoded pixels
 * (height × width × channels, row-major) before they are scaled for the model.
 *
 * Safe for photographs, not for digits or text (a flipped "2" is no "2"): `augmentFor` turns it on
 * by default for 3-channel (colour) inputs only.
 */
import type { Random } from '../runtime/random.js';
import type { InputSize } from '../data/images.js';

export const AUGMENT_CHOICES = ['auto', 'on', 'off'] as const;
export type AugmentChoice = (typeof AUGMENT_CHOICES)[number];

/** Whether to augment: as asked, or with 'auto' for colour inputs only. */
export function augmentFor(choice: AugmentChoice, size: InputSize): boolean {
  return choice === 'auto' ? size.channels === 3 : choice === 'on';
}

/** Largest shift in pixels: an eighth of the smaller side (4 px at 32×32), at least 1. */
export function maxShift(size: InputSize): number {
  return Math.max(1, Math.round(Math.min(size.height, size.width) / 8));
}

/** A shifted and maybe mirrored copy of one image's decoded pixels (new array, same type). */
export function augmentImage<T extends Uint8Array | Float32Array>(raw: T, size: InputSize, random: Random): T {
  const { height, width, channels } = size;
  const shift = maxShift(size);
  const dy = Math.floor(random.uniform() * (2 * shift + 1)) - shift;
  const dx = Math.floor(random.uniform() * (2 * shift + 1)) - shift;
  const flip = random.uniform() < 0.5;
  const out = new (raw.constructor as { new (n: number): T })(raw.length);
  for (let y = 0; y < height; y++) {
    const sy = y + dy;
    if (sy < 0 || sy >= height) continue;
    for (let x = 0; x < width; x++) {
      const sx = (flip ? width - 1 - x : x) + dx;
      if (sx < 0 || sx >= width) continue;
      const from = (sy * width + sx) * channels;
      const to = (y * width + x) * channels;
      for (let c = 0; c < channels; c++) out[to + c] = raw[from + c];
    }
  }
  return out;
}
