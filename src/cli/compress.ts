import { Command, Option } from 'commander';
import chalk from 'chalk';
import { parseRankSpec } from '../compress.js';
import { UserError } from '../errors.js';
import { skippedNote } from '../data/images.js';
import { runCompress, type CompressReport } from '../pipeline.js';
import { DEFAULT_RECONSTRUCT, stderrReporter, type ReconstructOptions } from '../reconstruct/index.js';
import { SCHEME_NAMES, schemeHelp } from '../schemes/index.js';
import { formatCount, formatPercent, formatRatio, renderTable } from '../report/format.js';
import { addImageOptions, intFlag, note, pixelOptions, startBackend, type ImageFlags } from './common.js';

interface CompressFlags {
  scheme: string;
  rank: string;
  layers?: string;
  out: string;
  basis: 'per-channel' | 'shared';
  separable?: boolean;
  force?: boolean;
  allowSlower?: boolean;
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
}

const DATA_ONLY = ['samples', 'joint', 'iterations', 'batch', 'seed', 'evalData', 'holdout', 'scale', 'offset', 'standardize', 'labels'];

/** The data reconstruction options, or null without --data (then no data-only flag may be given). */
function reconstructOptions(flags: DataFlags, command: Command): ReconstructOptions | null {
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
    iterations: flags.iterations === 'auto' ? 'auto' : intFlag(flags.iterations, '--iterations', 0),
    batch: intFlag(flags.batch, '--batch', 1),
    seed: intFlag(flags.seed, '--seed', 0),
    pixels: pixelOptions(flags),
    labels: flags.labels,
  };
}

export function registerCompress(program: Command): void {
  const command = program
    .command('compress')
    .description('replace conv and Dense layers with low-rank factorizations and write a stock tfjs LayersModel')
    .argument('<model>', 'model.json, or a folder holding one')
    .addOption(new Option('--scheme <name>', schemeHelp()).choices(SCHEME_NAMES).default('2'))
    .requiredOption('--rank <rank>', 'rank for every chosen layer (e.g. 8), or per layer (conv2=8,conv3=12)')
    .option('--layers <names>', 'comma-separated layers to replace (default: every Conv2D larger than 1×1 except the first conv, every 1×1 Conv2D and Dense layer except the last layer)')
    .requiredOption('--out <dir>', 'folder to write the compressed model into (must not exist unless --force)')
    .addOption(new Option('--basis <kind>', 'scheme 1: a basis per input channel, or one shared by all channels (the paper)').choices(['per-channel', 'shared']).default('per-channel'))
    .option('--separable', 'scheme 1: make each basis filter rank-1 (kh×1 then 1×kw depthwise convs)')
    .option('--force', 'replace an existing --out folder that lowrank wrote')
    .option('--allow-slower', 'replace layers even where the rank saves no MACs (warns for each)')
    .option('--json', 'print the report as JSON on stdout')
    .option('--data <dir>', 'fit the replaced layers to these images (data reconstruction); one subfolder per class for accuracy')
    .option('--samples <n>', 'use at most this many fitting images', String(DEFAULT_RECONSTRUCT.samples))
    .option('--joint', 'fit each layer behind the already approximated earlier layers (default with --data)')
    .option('--no-joint', 'fit each layer on its input in the original network')
    .option('--iterations <n>', 'optimizer steps per layer; auto: 300, fewer for layers whose steps are costly; 0: only solve the last factor exactly', String(DEFAULT_RECONSTRUCT.iterations))
    .option('--batch <n>', 'images per optimizer step', String(DEFAULT_RECONSTRUCT.batch))
    .option('--seed <n>', 'seed of the held-out split, the image sample and the step order', String(DEFAULT_RECONSTRUCT.seed))
    .option('--eval-data <dir>', 'held-out images for the error and accuracy report (default: --holdout of --data)')
    .option('--holdout <fraction>', 'fraction of --data set aside for checking when no --eval-data is given', String(DEFAULT_RECONSTRUCT.holdout));
  addImageOptions(command)
    .action(async (modelPath: string, flags: CompressFlags & DataFlags, cmd: Command) => {
      const backend = await startBackend(cmd);
      if (flags.separable && flags.scheme !== '1') throw new UserError('--separable applies to --scheme 1 only');
      if (flags.out.trim() === '') throw new UserError('--out is empty; give the folder to write the compressed model into');
      const layers = flags.layers?.split(',').map((s) => s.trim()).filter(Boolean);
      const report = await runCompress(
        {
          input: modelPath,
          out: flags.out,
          force: flags.force ?? false,
          scheme: flags.scheme,
          basis: flags.basis,
          separable: flags.separable ?? false,
          rank: parseRankSpec(flags.rank),
          layers,
          allowSlower: flags.allowSlower ?? false,
          data: reconstructOptions(flags, cmd),
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
    layers: r.layers.map((l) => {
      const d = fitted.get(l.name);
      return d ? { ...l, dataError: d.dataError, fitError: d.fitError, fitSteps: d.steps, kept: d.kept } : l;
    }),
    skipped: r.skipped,
    ...(data?.accuracy ? { accuracy: { original: data.accuracy.original, filter: data.accuracy.filter, data: data.accuracy.data } } : {}),
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
  if (!data) return table;
  const held = `${data.images.holdout} held-out images${data.images.holdoutSource === 'eval-data' ? ' (--eval-data)' : ''}`;
  const lines = [
    table,
    chalk.dim(`output error = ‖Y − Ŷ‖/‖Y‖ of each layer's linear response in the compressed network on ${held}; data reconstruction ${data.joint ? 'joint' : 'non-joint'}, ${data.images.fit} fitting images`),
  ];
  if (data.accuracy) {
    const a = data.accuracy;
    lines.push(`top-1 accuracy on ${a.labeled} held-out images: original ${formatPercent(a.original, 2)}, filter reconstruction ${formatPercent(a.filter, 2)}, data reconstruction ${chalk.bold(formatPercent(a.data, 2))}`);
  }
  return lines.join('\n');
}
