import { Command, Option } from 'commander';
import chalk from 'chalk';
import { parseRankSpec } from '../compress.js';
import { UserError } from '../errors.js';
import { skippedNote } from '../data/images.js';
import { runCompress, type CompressReport } from '../pipeline.js';
import { DEFAULT_RECONSTRUCT, stderrReporter, type ReconstructOptions } from '../reconstruct/index.js';
import { SCHEME_NAMES, schemeHelp } from '../schemes/index.js';
import { QUANTIZE_CHOICES, encodingOfFlag } from '../model/io.js';
import { formatBytes, formatCount, formatPercent, formatRatio, renderTable } from '../report/format.js';
import { addImageOptions, checkOutputName, intFlag, note, startBackend, type ImageFlags } from './common.js';
import { imageSetup } from './images.js';
import { FINETUNE_LAYERS, type FinetuneOptions } from '../train/finetune.js';

interface CompressFlags {
  scheme: string;
  rank?: string;
  speedup?: string;
  layers?: string;
  out: string;
  basis: 'per-channel' | 'shared';
  separable?: boolean;
  force?: boolean;
  allowSlower?: boolean;
  quantize?: (typeof QUANTIZE_CHOICES)[number];
  json?: boolean;
}

/** Data reconstruction flags (--data and the options that only apply with it). */
interface DataFlags extends ImageFlags {
  data?: string;
  samples: string;
  joint?: boolean;
  iterations: string;
  batch: string;
  seed: string;
  evalData?: string;
  holdout: string;
  finetune?: boolean;
  epochs: string;
  finetuneLayers: 'factors' | 'all';
}

const DATA_ONLY = ['samples', 'joint', 'iterations', 'batch', 'seed', 'evalData', 'holdout', 'scale', 'offset', 'standardize', 'resize', 'labels', 'finetune', 'epochs', 'finetuneLayers'];

/** Limits of --iterations and --batch: beyond them a run takes hours or exhausts memory for nothing. */
const MAX_ITERATIONS = 100000;
const MAX_BATCH = 4096;

/** The fine-tuning options, or null without --finetune (then --epochs and --finetune-layers may not be given). */
function finetuneOptions(flags: DataFlags, command: Command, data: ReconstructOptions | null): FinetuneOptions | null {
  if (!flags.finetune || !data) {
    const given = ['epochs', 'finetuneLayers'].find((k) => command.getOptionValueSource(k) === 'cli');
    if (given) throw new UserError(`${given === 'epochs' ? '--epochs' : '--finetune-layers'} applies to fine-tuning: give --finetune too`);
    return null;
  }
  return {
    epochs: flags.epochs === 'auto' ? 'auto' : intFlag(flags.epochs, '--epochs', 1),
    layers: flags.finetuneLayers,
    batch: data.batch,
    seed: data.seed,
  };
}

/** The data reconstruction options, or null without --data (then no data-only flag may be given). */
function reconstructOptions(flags: DataFlags, command: Command, modelPath: string): ReconstructOptions | null {
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
    samples: intFlag(flags.samples, '--samples', 2),
    joint: flags.joint ?? DEFAULT_RECONSTRUCT.joint,
    iterations: flags.iterations === 'auto' ? 'auto' : intFlag(flags.iterations, '--iterations', 0, { limit: MAX_ITERATIONS, why: 'the fit settles within a few thousand steps' }),
    batch: intFlag(flags.batch, '--batch', 1, { limit: MAX_BATCH, why: 'larger minibatches fit no better and may not fit in memory' }),
    seed: intFlag(flags.seed, '--seed', 0),
    ...imageSetup(command, flags, modelPath),
  };
}

function speedupFlag(text: string): number {
  const x = Number(text);
  if (!Number.isFinite(x) || x <= 1) throw new UserError(`--speedup ${text}: give a number above 1 (e.g. 4 for a model needing a quarter of the MACs)`);
  return x;
}

export function registerCompress(program: Command): void {
  const command = program
    .command('compress')
    .description('replace conv and Dense layers with low-rank factorizations and write a stock tfjs LayersModel')
    .argument('<model>', 'model.json, or a folder holding one')
    .addOption(new Option('--scheme <name>', schemeHelp()).choices(SCHEME_NAMES).default('2'))
    .option('--rank <rank>', 'rank for every chosen layer (e.g. 8), or per layer (conv2=8,conv3=12)')
    .option('--speedup <x>', 'choose the ranks: the whole model at least this many times fewer MACs, with the least predicted error')
    .option('--layers <names>', 'comma-separated layers to replace (default: every Conv2D larger than 1×1 except the first conv, every 1×1 Conv2D and Dense layer except the last layer)')
    .requiredOption('--out <dir>', 'folder to write the compressed model into (must not exist unless --force)')
    .addOption(new Option('--basis <kind>', 'scheme 1: a basis per input channel, or one shared by all channels (the paper)').choices(['per-channel', 'shared']).default('per-channel'))
    .option('--separable', 'scheme 1: make each basis filter rank-1 (kh×1 then 1×kw depthwise convs)')
    .option('--force', 'replace an existing --out folder that lowrank wrote')
    .option('--allow-slower', 'replace layers even where the rank saves no MACs (warns for each)')
    .addOption(new Option('--quantize <kind>', 'precision of the new weights (default: that of most of the input\'s weights; the others keep their bytes)').choices(QUANTIZE_CHOICES))
    .option('--json', 'print the report as JSON on stdout')
    .option('--data <dir>', 'fit the replaced layers to these images (data reconstruction); one subfolder per class for accuracy')
    .option('--samples <n>', 'use at most this many fitting images', String(DEFAULT_RECONSTRUCT.samples))
    .option('--joint', 'fit each layer behind the already approximated earlier layers (default with --data)')
    .option('--no-joint', 'fit each layer on its input in the original network')
    .option('--iterations <n>', 'optimizer steps per layer; auto: 300, fewer for layers whose steps are costly; 0: only solve the last factor exactly', String(DEFAULT_RECONSTRUCT.iterations))
    .option('--batch <n>', 'images per optimizer step', String(DEFAULT_RECONSTRUCT.batch))
    .option('--seed <n>', 'seed of the held-out split, the image sample and the step order', String(DEFAULT_RECONSTRUCT.seed))
    .option('--eval-data <dir>', 'held-out images for the error and accuracy report (default: --holdout of --data)')
    .option('--holdout <fraction>', 'fraction of --data set aside for checking when no --eval-data is given', String(DEFAULT_RECONSTRUCT.holdout))
    .option('--finetune', 'after data reconstruction, train the compressed model end to end to reproduce the original (distillation)')
    .option('--epochs <n>', 'fine-tuning epochs; auto: stop when the held-out error stops improving', 'auto')
    .addOption(new Option('--finetune-layers <which>', 'fine-tune the new factor layers only, or every layer').choices([...FINETUNE_LAYERS]).default('factors'));
  addImageOptions(command)
    .action(async (modelPath: string, flags: CompressFlags & DataFlags, cmd: Command) => {
      const backend = await startBackend(cmd);
      if (flags.separable && flags.scheme !== '1') throw new UserError('--separable applies to --scheme 1 only');
      if (flags.out.trim() === '') throw new UserError('--out is empty; give the folder to write the compressed model into');
      checkOutputName(flags.out);
      const layers = flags.layers?.split(',').map((s) => s.trim()).filter(Boolean);
      const data = reconstructOptions(flags, cmd, modelPath);
      const report = await runCompress(
        {
          input: modelPath,
          out: flags.out,
          force: flags.force ?? false,
          scheme: flags.scheme,
          basis: flags.basis,
          separable: flags.separable ?? false,
          rank: flags.rank === undefined ? undefined : parseRankSpec(flags.rank),
          speedup: flags.speedup === undefined ? undefined : speedupFlag(flags.speedup),
          layers,
          allowSlower: flags.allowSlower ?? false,
          data,
          finetune: finetuneOptions(flags, cmd, data),
          quantize: flags.quantize === undefined ? undefined : encodingOfFlag(flags.quantize),
        },
        (message) => note(message.startsWith('warning: ') ? chalk.yellow(`lowrank: ${message}`) : `lowrank: ${message}`),
        stderrReporter(),
      );
      const skipped = report.data ? skippedNote({ skipped: report.data.skippedFiles, decoded: 0 }) : null;
      if (skipped) note(chalk.yellow(`lowrank: warning: ${skipped}`));
      if (flags.json) {
        process.stdout.write(`${JSON.stringify(compressJson(backend, report), null, 2)}\n`);
      } else {
        process.stdout.write(`${renderCompress(report)}\n`);
        process.stdout.write(`files (weights + model.json) ${formatBytes(report.fileBytes.before)} → ${formatBytes(report.fileBytes.after)}; new weights ${report.newWeights}\n`);
        note(`lowrank: wrote ${report.output} (${report.saved.shards} weight shard${report.saved.shards > 1 ? 's' : ''})`);
      }
    });
}

export function compressJson(backend: string, r: CompressReport) {
  const data = r.data;
  const fitted = new Map(data?.layers.map((l) => [l.name, l]));
  return {
    backend,
    input: r.input,
    output: r.output,
    scheme: r.scheme.id,
    totalMacsBefore: r.totalMacsBefore,
    totalMacsAfter: r.totalMacsAfter,
    theoreticalSpeedup: r.theoreticalSpeedup,
    ...(r.allocation ? { rankSelection: r.allocation } : {}),
    fileBytes: r.fileBytes,
    newWeights: r.newWeights,
    layers: r.layers.map((l) => {
      const d = fitted.get(l.name);
      return d ? { ...l, dataError: d.dataError, fitError: d.fitError, fitSteps: d.steps, kept: d.kept } : l;
    }),
    skipped: r.skipped,
    ...(data?.accuracy ? {
      accuracy: {
        original: data.accuracy.original, filter: data.accuracy.filter, data: data.accuracy.data,
        ...(r.finetune?.accuracy != null ? { finetuned: r.finetune.accuracy } : {}),
      },
    } : {}),
    ...(data ? {
      dataReconstruction: {
        joint: data.joint,
        images: data.images,
        labeled: data.accuracy?.labeled ?? 0,
        iterations: data.iterations,
        batch: data.batch,
        seed: data.seed,
        seconds: data.seconds,
      },
    } : {}),
    ...(r.finetune ? { finetune: r.finetune } : {}),
  };
}

export function renderCompress(r: CompressReport): string {
  const data = r.data;
  const fitted = new Map(data?.layers.map((l) => [l.name, l]));
  const errorCells = (name: string) => {
    if (!data) return [];
    const d = fitted.get(name);
    if (!d) return ['', ''];
    return [formatPercent(d.dataError.filter, 2), `${formatPercent(d.dataError.data, 2)}${d.kept === 'filter' ? ' (kept filter)' : ''}`];
  };
  const rows = r.layers.map((l) => [
    l.name,
    l.label,
    `${l.rank}/${l.fullRank}`,
    `${formatCount(l.macsBefore)} → ${formatCount(l.macsAfter)}`,
    chalk.bold(formatRatio(l.macsBefore / l.macsAfter)),
    `${formatCount(l.paramsBefore)} → ${formatCount(l.paramsAfter)}`,
    formatPercent(l.filterError, 2),
    ...errorCells(l.name),
    l.newLayers.join(', '),
  ]);
  const errorColumns = data
    ? [{ header: 'output error: filter', align: 'right' as const }, { header: 'data', align: 'right' as const }]
    : [];
  const table = renderTable(
    [
      { header: 'layer' }, { header: 'scheme' }, { header: 'rank', align: 'right' }, { header: 'MACs', align: 'right' },
      { header: 'speedup', align: 'right' }, { header: 'params', align: 'right' }, { header: 'filter error', align: 'right' },
      ...errorColumns,
      { header: 'new layers' },
    ],
    rows,
    [[
      'model', '', '', `${formatCount(r.totalMacsBefore)} → ${formatCount(r.totalMacsAfter)}`,
      chalk.bold(formatRatio(r.theoreticalSpeedup)), '', '', ...errorColumns.map(() => ''), '',
    ]],
  );
  const allocation = r.allocation
    ? [chalk.dim(`ranks chosen for ≥ ${r.allocation.target}× (theoretical) by ${r.allocation.basis === 'measured' ? 'measured sensitivity: summed output error of each layer replaced alone' : "the kernels' spectra: summed filter error"} ${r.allocation.predictedError.toFixed(3)}${r.allocation.baselineError !== null ? ` (the same fraction of every full rank: ${r.allocation.baselineError.toFixed(3)})` : ''}`)]
    : [];
  if (!data) return [table, ...allocation].join('\n');
  const held = `${data.images.holdout} held-out images${data.images.holdoutSource === 'eval-data' ? ' (--eval-data)' : ''}`;
  const lines = [
    table,
    ...allocation,
    chalk.dim(`output error = ‖Y − Ŷ‖/‖Y‖ of each layer's linear response in the compressed network on ${held}; data reconstruction ${data.joint ? 'joint' : 'non-joint'}, ${data.images.fit} fitting images`),
  ];
  if (data.accuracy) {
    const a = data.accuracy;
    const tuned = r.finetune?.accuracy != null ? `, data reconstruction + fine-tuning ${chalk.bold(formatPercent(r.finetune.accuracy, 2))}` : '';
    lines.push(`top-1 accuracy on ${a.labeled} held-out images: original ${formatPercent(a.original, 2)}, filter reconstruction ${formatPercent(a.filter, 2)}, data reconstruction ${tuned ? formatPercent(a.data, 2) : chalk.bold(formatPercent(a.data, 2))}${tuned}`);
  }
  const f = r.finetune;
  if (f) {
    const outcome = f.kept === 'finetuned' ? `kept epoch ${f.bestEpoch} of ${f.epochs}` : `no epoch of ${f.epochs} beat the layer-wise reconstruction: kept it`;
    lines.push(`fine-tuning (${f.target}, ${f.trainedWeights} weights, ${f.seconds.toFixed(1)} s): held-out output error ${formatPercent(f.heldOut.error.data, 2)} → ${formatPercent(f.heldOut.error.finetuned, 2)}, agreement with the original ${formatPercent(f.heldOut.agreement.data, 2)} → ${formatPercent(f.heldOut.agreement.finetuned, 2)}; ${outcome}`);
  }
  return lines.join('\n');
}
