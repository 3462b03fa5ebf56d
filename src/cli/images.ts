/**
 * What the images fed to a model go through, decided once for every command that reads images:
 * the image flags, with a Teachable Machine metadata.json beside the model filling in the class
 * order and the pixel mapping that the flags leave unset.
 */
import type { Command } from 'commander';
import type { ClassList, PixelOptions } from '../data/images.js';
import { METADATA_FILE, TEACHABLE_PIXELS, readModelMetadata } from '../data/metadata.js';
import { resolveModelJson } from '../model/io.js';
import { note, pixelOptions, type ImageFlags } from './common.js';

export interface ImageSetup {
  pixels: PixelOptions;
  /** A --labels file, the metadata's class list, or undefined for sorted subfolder names. */
  labels?: string | ClassList;
}

/** Flags that, given on the command line, take the pixel mapping out of metadata.json's hands. */
const PIXEL_FLAGS = ['scale', 'offset', 'standardize'];

export function imageSetup(command: Command, flags: ImageFlags, modelPath: string): ImageSetup {
  const pixels = pixelOptions(flags);
  const metadata = readModelMetadata(resolveModelJson(modelPath));
  if (!metadata) return { pixels, labels: flags.labels };
  const useLabels = flags.labels === undefined;
  const usePixels = PIXEL_FLAGS.every((flag) => command.getOptionValueSource(flag) !== 'cli');
  const used = [useLabels ? 'labels' : '', usePixels ? '[-1, 1] pixels' : ''].filter(Boolean);
  if (used.length) note(`lowrank: using ${used.join(' and ')} from ${METADATA_FILE} beside the model`);
  return {
    pixels: usePixels ? { ...pixels, ...TEACHABLE_PIXELS } : pixels,
    labels: useLabels ? metadata.labels : flags.labels,
  };
}
