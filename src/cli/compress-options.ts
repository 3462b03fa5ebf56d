/**
 * Flags that compress and sweep share, defined once: the scheme and the layers to replace, speedup
 * targets, and data reconstruction (--data and the options that only apply with it).
 */
import { Command, Option } from 'commander';
import { UserError } from '../errors.js';
import { DEFAULT_RECONSTRUCT, type ReconstructOptions } from '../reconstruct/index.js';
import { SCHEME_NAMES, schemeHelp, type SchemeOptions } from '../schemes/index.js';
import { addImageOptions, intFlag, type ImageFlags } from './common.js';
import { imageSetup } from './images.js';

export interface SchemeFlags {
  scheme: string;
  layers?: string;
  basis: 'per-channel' | 'shared';
  separable?: boolean;
}

export function addSchemeOptions(command: Command): Command {
  return command
    .addOption(new Option('--scheme <name>', schemeHelp()).choices(SCHEME_NAMES).default('2'))
    .option('--layers <names>', 'comma-separated layers to replace (default: every Conv2D larger than 1×1 except the first conv, every 1×1 Conv2D and Dense layer except the last layer)')
    .addOption(new Option('--basis <kind>', 'scheme 1: a basis per input channel, or one shared by all channels (the paper)').choices(['per-channel', 'shared']).default('per-channel'))
    .option('--separable', 'scheme 1: make each basis filter rank-1 (kh×1 then 1×kw depthwise convs)');
}

export function schemeOptions(flags: SchemeFlags): SchemeOptions & { layers?: string[] } {
  if (flags.separable && flags.scheme !== '1') throw new UserError('--separable applies to --scheme 1 only');
  return {
    scheme: flags.scheme,
    basis: flags.basis,
    separable: flags.separable ?? false,
    layers: flags.layers?.split(',').map((s) => s.trim()).filter(Boolean),
  };
}

/** A whole-model speedup target given as `flag`. */
export function speedupValue(text: string, flag: string): number {
  const x = Number(text);
  if (!Number.isFinite(x) || x <= 1) throw new UserError(`${flag} ${text}: give a number above 1 (e.g. 4 for a model needing a quarter of the MACs)`);
  return x;
}

/** Data reconstruction flags (--data and the options that only apply with it). */
export interface DataFlags extends ImageFlags {
  data?: string;
  samples: string;
  joint?: boolean;
  iterations: string;
  batch: string;
  seed: string;
  evalData?: string;
  holdout: string;
}

/** Limits of --iterations and --batch: beyond them a run takes hours or exhausts memory for nothing. */
const MAX_ITERATIONS = 100000;
const MAX_BATCH = 4096;

const DATA_ONLY = ['samples', 'joint', 'iterations', 'batch', 'seed', 'evalData', 'holdout', 'scale', 'offset', 'standardize', 'resize', 'labels'];

/** --data (optional unless `required`), the data reconstruction options and the image options. */
export function addDataOptions(command: Command, dataHelp: string, required = false): Command {
  command
    .addOption(new Option('--data <dir>', dataHelp).makeOptionMandatory(required))
    .option('--samples <n>', 'use at most this many fitting images; auto: 1000, fewer on models costly to run (e.g. 350 on a 5.7 GMAC InceptionV3)', String(DEFAULT_RECONSTRUCT.samples))
    .option('--joint', 'fit each layer behind the already approximated earlier layers (default with --data)')
    .option('--no-joint', 'fit each layer on its input in the original network')
    .option('--iterations <n>', 'optimizer steps per layer; auto: 300, fewer for layers whose steps are costly; 0: only solve the last factor exactly', String(DEFAULT_RECONSTRUCT.iterations))
    .option('--batch <n>', 'images per optimizer step', String(DEFAULT_RECONSTRUCT.batch))
    .option('--seed <n>', 'seed of the held-out split, the image sample and the step order', String(DEFAULT_RECONSTRUCT.seed))
    .option('--eval-data <dir>', 'held-out images for the error and accuracy report (default: --holdout of --data)')
    .option('--holdout <fraction>', 'fraction of --data set aside for checking when no --eval-data is given', String(DEFAULT_RECONSTRUCT.holdout));
  return addImageOptions(command);
}

/** The data reconstruction options, or null without --data (then no data-only flag may be given). */
export function reconstructOptions(flags: DataFlags, command: Command, modelPath: string): ReconstructOptions | null {
  if (!flags.data) {
    const given = DATA_ONLY.filter((k) => command.getOptionValueSource(k) === 'cli');
    if (given.length) {
      const flag = command.options.find((o) => o.attributeName() === given[0])!;
      throw new UserError(`${flag.long} applies to data reconstruction: give --data <image-folder> too`);
    }
    return null;
  }
  const holdout = Number(flags.holdout);
  if (!(holdout > 0 && holdout < 1)) throw new UserError(`--holdout ${flags.holdout}: give a fraction between 0 and 1 (e.g. 0.2)`);
  if (flags.evalData && command.getOptionValueSource('holdout') === 'cli') {
    throw new UserError('--holdout sets images of --data aside for checking; with --eval-data all of --data is used for fitting: give one of the two');
  }
  return {
    data: flags.data,
    evalData: flags.evalData,
    holdout,
    samples: flags.samples === 'auto' ? 'auto' : intFlag(flags.samples, '--samples', 2),
    joint: flags.joint ?? DEFAULT_RECONSTRUCT.joint,
    iterations: flags.iterations === 'auto' ? 'auto' : intFlag(flags.iterations, '--iterations', 0, { limit: MAX_ITERATIONS, why: 'the fit settles within a few thousand steps' }),
    batch: intFlag(flags.batch, '--batch', 1, { limit: MAX_BATCH, why: 'larger minibatches fit no better and may not fit in memory' }),
    seed: intFlag(flags.seed, '--seed', 0),
    ...imageSetup(command, flags, modelPath),
  };
}
