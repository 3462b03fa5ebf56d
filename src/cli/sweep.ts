/** `lowrank sweep`: accuracy against measured speedup over a list of targets (src/commands/sweep.ts does the work). */
import type { Command } from 'commander';
import chalk from 'chalk';
import * as path from 'node:path';
import { stderrReporter } from '../reconstruct/index.js';
import { formatPercent, formatRatio, renderTable } from '../report/format.js';
import { DEFAULT_SPEEDUPS, SWEEP_BATCHES, measuredAt, runSweep, writeSweepOutputs, type SweepReport } from '../commands/sweep.js';
import { addTimingOptions, checkOutputName, note, startBackend } from './common.js';
import {
  addDataOptions, addSchemeOptions, reconstructOptions, schemeOptions, type DataFlags, type SchemeFlags,
} from './compress-options.js';
import { parseFlag, parseFlagList } from './flags.js';
import { checkFlagRules } from './rules.js';

interface SweepFlags extends SchemeFlags, DataFlags {
  speedups: string;
  out: string;
  keep?: boolean;
  runs: string;
  warmup: string;
  json?: boolean;
}

export function registerSweep(program: Command): void {
  const command = program
    .command('sweep')
    .description('compress at several target speedups (ranks by measured sensitivity, data reconstruction) and plot accuracy against measured speedup')
    .argument('<model>', 'model.json, or a folder holding one')
    .option('--speedups <list>', 'comma-separated whole-model targets (theoretical, by MACs)', DEFAULT_SPEEDUPS.join(','))
    .requiredOption('--out <dir>', 'folder for sweep.json, sweep.csv, sweep.svg and sweep.png; an existing sweep there is resumed')
    .option('--keep', 'also save every point\'s model under <out>/models/<target>x/')
    .option('--json', 'print the report as JSON on stdout');
  addDataOptions(addTimingOptions(addSchemeOptions(command)), 'images to fit the replaced layers to and to measure sensitivity on; one subfolder per class for accuracy', true)
    .action(async (modelPath: string, flags: SweepFlags, cmd: Command) => {
      const warnings = checkFlagRules(cmd, modelPath);
      const backend = await startBackend(cmd);
      for (const w of warnings) note(chalk.yellow(`lowrank: warning: ${w}`));
      checkOutputName(flags.out);
      const speedups = parseFlagList('--speedup', flags.speedups, '--speedups');
      const report = await runSweep(
        {
          input: modelPath,
          out: flags.out,
          speedups,
          ...schemeOptions(flags),
          data: reconstructOptions(flags, cmd, modelPath)!,
          keep: flags.keep ?? false,
          runs: parseFlag('--runs', flags.runs),
          warmup: parseFlag('--warmup', flags.warmup),
          backend,
        },
        (message) => note(message.startsWith('warning: ') ? chalk.yellow(`lowrank: ${message}`) : `lowrank: ${message}`),
        stderrReporter(),
      );
      const written = await writeSweepOutputs(flags.out, report);
      if (flags.json) process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
      else process.stdout.write(`${renderSweep(report)}\n`);
      note(`lowrank: wrote ${written.map((f) => path.relative(process.cwd(), f)).join(', ')}`);
    });
}

export function renderSweep(r: SweepReport): string {
  const labelled = r.points.every((p) => p.accuracy !== null);
  const pair = (a: number, b: number) => `${formatPercent(a, 1)} → ${chalk.bold(formatPercent(b, 1))}`;
  const rows = r.points.map((p) => [
    `${p.target}×`,
    Object.entries(p.ranks).map(([n, k]) => `${n}=${k}`).join(','),
    formatRatio(p.theoreticalSpeedup),
    ...SWEEP_BATCHES.map((b) => formatRatio(measuredAt(p, b))),
    ...(labelled ? [pair(p.accuracy!.filter, p.accuracy!.data)] : []),
    pair(p.agreement.filter, p.agreement.data),
    `${p.seconds.fit.toFixed(1)} s`,
  ]);
  const skipped = r.unreachable.map((u) => [`${u.target}×`, chalk.yellow(`cannot be reached: at most ${formatRatio(u.maximum)}`)]);
  const table = renderTable(
    [
      { header: 'target' }, { header: 'ranks' }, { header: 'theoretical', align: 'right' },
      ...SWEEP_BATCHES.map((b) => ({ header: `measured b=${b}`, align: 'right' as const })),
      ...(labelled ? [{ header: 'top-1 filter → data', align: 'right' as const }] : []),
      { header: 'agreement filter → data', align: 'right' }, { header: 'fit', align: 'right' },
    ],
    [...rows, ...skipped],
  );
  const original = labelled && r.points.length ? `; original top-1 ${formatPercent(r.points[0].accuracy!.original, 2)}` : '';
  const resumed = r.points.length - r.computed.length;
  return [
    `${chalk.bold(r.input)} · ${r.images.fit} fitting images, ${r.images.holdout} held out${original} · backend ${r.settings.backend}`,
    table,
    chalk.dim(`ranks by measured sensitivity on ${r.sensitivity.images} fitting images; measured = median of paired original/compressed runs; fit = data reconstruction time${resumed ? `; ${resumed} point${resumed > 1 ? 's' : ''} from an earlier run` : ''}`),
  ].join('\n');
}
