import { Command, Option } from 'commander';
import chalk from 'chalk';
import * as path from 'node:path';
import { compressModel, parseRankSpec, type CompressResult } from '../compress.js';
import { UserError } from '../errors.js';
import { checkOutputDir, loadModel, saveModel } from '../model/io.js';
import { formatCount, formatPercent, formatRatio, renderTable } from '../report/format.js';
import { note, startBackend } from './common.js';

interface CompressFlags {
  scheme: string;
  rank: string;
  layers?: string;
  out: string;
  basis: 'per-channel' | 'shared';
  separable?: boolean;
  force?: boolean;
  json?: boolean;
}

export function registerCompress(program: Command): void {
  program
    .command('compress')
    .description('replace conv layers with low-rank factorizations and write a stock tfjs LayersModel')
    .argument('<model>', 'model.json, or a folder holding one')
    .addOption(new Option('--scheme <n>', '1: basis filters per channel + 1×1 (SeparableConv2D); 2: kh×1 conv then 1×kw conv').choices(['1', '2']).default('2'))
    .requiredOption('--rank <rank>', 'rank for every chosen layer (e.g. 8), or per layer (conv2=8,conv3=12)')
    .option('--layers <names>', 'comma-separated Conv2D layers to replace (default: every Conv2D larger than 1×1 except the first)')
    .requiredOption('--out <dir>', 'folder to write the compressed model into (must not exist unless --force)')
    .addOption(new Option('--basis <kind>', 'scheme 1: a basis per input channel, or one shared by all channels (the paper)').choices(['per-channel', 'shared']).default('per-channel'))
    .option('--separable', 'scheme 1: make each basis filter rank-1 (kh×1 then 1×kw depthwise convs)')
    .option('--force', 'replace an existing --out folder, and layers whose rank saves no MACs')
    .option('--json', 'print the report as JSON on stdout')
    .action(async (modelPath: string, flags: CompressFlags, command: Command) => {
      const backend = await startBackend(command);
      if (flags.separable && flags.scheme !== '1') throw new UserError('--separable applies to --scheme 1 only');
      const rank = parseRankSpec(flags.rank);
      const loaded = await loadModel(modelPath);
      checkOutputDir(flags.out, flags.force ?? false, loaded.jsonPath);
      const result = await compressModel(
        loaded.model,
        {
          scheme: flags.scheme === '1' ? 1 : 2,
          rank,
          layers: flags.layers?.split(',').map((s) => s.trim()).filter(Boolean),
          basis: flags.basis,
          separable: flags.separable ?? false,
          force: flags.force ?? false,
        },
        (message) => note(`lowrank: ${message}`),
      );
      for (const s of result.skipped) note(chalk.yellow(`lowrank: warning: left ${s.name} as it is: ${s.reason}`));
      const saved = await saveModel(result.model, flags.out, { force: flags.force });
      const input = path.relative(process.cwd(), loaded.jsonPath);
      const output = path.relative(process.cwd(), saved.jsonPath);
      if (flags.json) {
        process.stdout.write(`${JSON.stringify(compressJson(backend, input, output, result), null, 2)}\n`);
      } else {
        process.stdout.write(`${renderCompress(result)}\n`);
        note(`lowrank: wrote ${output} (${saved.shards} weight shard${saved.shards > 1 ? 's' : ''})`);
      }
    });
}

export function compressJson(backend: string, input: string, output: string, r: CompressResult) {
  return {
    backend,
    input,
    output,
    scheme: r.scheme.id,
    totalMacsBefore: r.totalMacsBefore,
    totalMacsAfter: r.totalMacsAfter,
    theoreticalSpeedup: r.theoreticalSpeedup,
    layers: r.layers,
    skipped: r.skipped,
  };
}

export function renderCompress(r: CompressResult): string {
  const rows = r.layers.map((l) => [
    l.name,
    r.scheme.label,
    `${l.rank}/${l.fullRank}`,
    `${formatCount(l.macsBefore)} → ${formatCount(l.macsAfter)}`,
    chalk.bold(formatRatio(l.macsBefore / l.macsAfter)),
    `${formatCount(l.paramsBefore)} → ${formatCount(l.paramsAfter)}`,
    formatPercent(l.filterError, 2),
    l.newLayers.join(', '),
  ]);
  return renderTable(
    [
      { header: 'layer' }, { header: 'scheme' }, { header: 'rank', align: 'right' }, { header: 'MACs', align: 'right' },
      { header: 'speedup', align: 'right' }, { header: 'params', align: 'right' }, { header: 'filter error', align: 'right' },
      { header: 'new layers' },
    ],
    rows,
    [[
      'model', '', '', `${formatCount(r.totalMacsBefore)} → ${formatCount(r.totalMacsAfter)}`,
      chalk.bold(formatRatio(r.theoreticalSpeedup)), '', '', '',
    ]],
  );
}
