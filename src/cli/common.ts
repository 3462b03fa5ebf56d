/** Pieces every command shares: backend start-up and where messages go. */
import type { Command } from 'commander';
import { MAX_THREADS, backendThreads, useBackend, type BackendChoice } from '../backend.js';

/** Options every command takes (see main.ts). */
export interface GlobalOptions {
  backend: BackendChoice;
  threads: string;
  verbose: boolean;
}

/** Messages for people go to stderr, so stdout stays clean for tables and --json. */
export function note(message: string): void {
  process.stderr.write(`${message}\n`);
}

export async function startBackend(command: Command): Promise<string> {
  const { backend, threads } = command.optsWithGlobals() as GlobalOptions;
  const name = await useBackend(backend, intFlag(threads, '--threads', 1, MAX_THREADS));
  const n = backendThreads();
  note(`lowrank: tfjs backend ${name}${n === null ? '' : `, ${n} thread${n === 1 ? '' : 's'}`}`);
  return name;
}

import { Option } from 'commander';
import { UserError } from '../errors.js';
import type { PixelOptions } from '../data/images.js';
import { RESIZE_METHODS, type ResizeMethod } from '../data/preprocess.js';

export interface ImageFlags {
  scale: string;
  offset: string;
  standardize?: boolean;
  resize: ResizeMethod;
  labels?: string;
}

/** Image options shared by compress (--data), bench and evaluate. */
export function addImageOptions(command: Command): Command {
  return command
    .addOption(new Option('--scale <x>', 'multiply 0–255 pixels by this').default('0.00392156862745098', '1/255'))
    .option('--offset <x>', 'add this after scaling', '0')
    .option('--standardize', 'per image zero mean and unit variance instead of --scale/--offset')
    .addOption(new Option('--resize <method>', "how images reach the model's input size: sharp's resampler, or tfjs' resizeBilinear / resizeNearestNeighbor").choices(RESIZE_METHODS).default('sharp'))
    .option('--labels <file>', 'class names in output order, one per line (default: the labels of a metadata.json beside the model, else sorted subfolder names)');
}

export function pixelOptions(flags: ImageFlags): PixelOptions {
  const scale = Number(flags.scale);
  const offset = Number(flags.offset);
  if (!Number.isFinite(scale)) throw new UserError(`--scale ${flags.scale}: give a number`);
  if (!Number.isFinite(offset)) throw new UserError(`--offset ${flags.offset}: give a number`);
  return { scale, offset, standardize: flags.standardize ?? false, resize: flags.resize };
}

/** A whole number from min to max from a flag. */
export function intFlag(value: string, flag: string, min = 1, max = Infinity): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new UserError(`${flag} ${value}: give a whole number ${max === Infinity ? `≥ ${min}` : `from ${min} to ${max}`}`);
  }
  return n;
}
