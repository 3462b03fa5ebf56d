/** Pieces every command shares: backend start-up, where messages go, flag parsing. */
import { Option, type Command } from 'commander';
import chalk from 'chalk';
import { formatPercent } from '../report/format.js';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { backendThreads, useBackend, type BackendChoice } from '../runtime/backend.js';
import { UserError } from '../errors.js';
import type { PixelOptions } from '../data/images.js';
import { numberFlag, parseFlag } from './flags.js';
import { RESIZE_METHODS, type ResizeMethod } from '../data/preprocess.js';
import { DEFAULT_RUNS, DEFAULT_WARMUP, MIN_RUNS, MIN_TIMED_MS } from '../timing/loop.js';

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
  const name = await useBackend(backend, parseFlag('--threads', threads));
  const n = backendThreads();
  note(`lowrank: tfjs backend ${name}${n === null ? '' : `, ${n} thread${n === 1 ? '' : 's'}`}`);
  return name;
}


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
    .option('--scale <x>', 'multiply 0–255 pixels by this (a number or a fraction such as 2/255)', '1/255')
    .option('--offset <x>', 'add this after scaling (a number or a fraction)', '0')
    .option('--standardize', 'per image zero mean and unit variance instead of --scale/--offset')
    .addOption(new Option('--resize <method>', "how images reach the model's input size: sharp's resampler, or tfjs' resizeBilinear / resizeNearestNeighbor").choices(RESIZE_METHODS).default('sharp'))
    .option('--labels <file>', 'class names in output order, one per line (default: the labels of a metadata.json beside the model, else sorted subfolder names)');
}

export function pixelOptions(flags: ImageFlags): PixelOptions {
  const scale = numberFlag(flags.scale, '--scale');
  const offset = numberFlag(flags.offset, '--offset');
  // Pixels are float32: a scale or offset past its range turns every image into Inf.
  const largest = Math.abs(255 * scale) + Math.abs(offset);
  if (!Number.isFinite(Math.fround(largest))) {
    throw new UserError(`--scale ${flags.scale} --offset ${flags.offset}: pixels would reach ${largest.toExponential(2)}, beyond float32 (3.4e+38); give the model's own preprocessing (e.g. --scale 1/255)`);
  }
  return { scale, offset, standardize: flags.standardize ?? false, resize: flags.resize };
}

/** Timing flags of the commands that time models (bench, sweep). */
export function addTimingOptions(command: Command): Command {
  return command
    .option('--runs <n>', `timed runs per model and batch size (at least ${MIN_RUNS}, more until each model ran ${MIN_TIMED_MS / 1000} s)`, String(DEFAULT_RUNS))
    .option('--warmup <n>', 'untimed runs first', String(DEFAULT_WARMUP));
}

/**
 * Fails before any work if the file system refuses `dir`'s name as too long, or that of the
 * temporary folder the model is written into beside it (the longest name lowrank creates there).
 */
export function checkOutputName(dir: string, flag = '--out'): void {
  if (dir.trim() === '') throw new UserError(`${flag} is empty; give the folder to write into`);
  const out = path.resolve(dir);
  // The working folder, or a folder holding it, would be swapped away under the shell.
  const realOut = fs.existsSync(out) ? fs.realpathSync(out) : out;
  const here = fs.realpathSync(process.cwd());
  const rel = path.relative(realOut, here);
  if (rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel))) {
    throw new UserError(`${flag} ${dir} is ${rel === '' ? 'the working folder' : 'a folder holding the working folder'}; give a new folder inside it (e.g. ${flag} out)`);
  }
  const temporary = path.join(path.dirname(out), `.${path.basename(out)}.partial-XXXXXX-old`);
  for (const p of [out, temporary]) {
    try {
      fs.statSync(p);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENAMETOOLONG') {
        throw new UserError(`${flag} ${dir}: the name is too long for the file system; choose a shorter one`);
      }
    }
  }
}

/** Beside an agreement: what answering the original's commonest class for every image would agree on, when that is most of them. */
export function commonestNote(commonest: number): string {
  return commonest >= 0.5 ? chalk.dim(` (one class for every image would agree on ${formatPercent(commonest, 1)}: the original's commonest)`) : '';
}
