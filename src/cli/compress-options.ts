/**
 * Flags that compress and sweep share, defined once: the scheme and the layers to replace, speedup
 * targets, and data reconstruction (--data and the options that only apply with it).
 */
import { Command, Option } from 'commander';
import { DEFAULT_RECONSTRUCT, type ReconstructOptions } from '../reconstruct/index.js';
import { DEFAULT_SCHEME, SCHEME_NAMES, schemeHelp, type SchemeOptions } from '../schemes/index.js';
import { addImageOptions, type ImageFlags } from './common.js';
import { parseFlag, parseFlagOrAuto } from './flags.js';
import { imageSetup } from './images.js';

export interface SchemeFlags {
  scheme: string;
  layers?: string;
  basis: 'per-channel' | 'shared';
  separable?: boolean;
}

export function addSchemeOptions(command: Command): Command {
  return command
    .addOption(new Option('--scheme <name>', schemeHelp()).choices(SCHEME_NAMES).default(DEFAULT_SCHEME.scheme))
    .option('--layers <names>', 'comma-separated layers to replace (default: every Conv2D larger than 1×1 except the first conv, every 1×1 Conv2D and Dense layer except the last layer)')
    .addOption(new Option('--basis <kind>', 'scheme 1: a basis per input channel, or one shared by all channels (the paper)').choices(['per-channel', 'shared']).default(DEFAULT_SCHEME.basis))
    .option('--separable', 'scheme 1: make each basis filter rank-1 (kh×1 then 1×kw depthwise convs)');
}

export function schemeOptions(flags: SchemeFlags): SchemeOptions & { layers?: string[] } {
  return {
    scheme: flags.scheme,
    basis: flags.basis,
    separable: flags.separable ?? false,
    layers: flags.layers?.split(',').map((s) => s.trim()).filter(Boolean),
  };
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

/** The data reconstruction options, or null without --data (rules.ts refuses data-only flags then). */
export function reconstructOptions(flags: DataFlags, command: Command, modelPath: string): ReconstructOptions | null {
  if (!flags.data) return null;
  return {
    data: flags.data,
    evalData: flags.evalData,
    holdout: parseFlag('--holdout', flags.holdout),
    samples: parseFlagOrAuto('--samples', flags.samples),
    joint: flags.joint ?? DEFAULT_RECONSTRUCT.joint,
    iterations: parseFlagOrAuto('--iterations', flags.iterations),
    batch: parseFlag('--batch', flags.batch),
    seed: parseFlag('--seed', flags.seed),
    ...imageSetup(command, flags, modelPath),
  };
}
