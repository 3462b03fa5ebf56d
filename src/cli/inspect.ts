import type { Command } from 'commander';
import chalk from 'chalk';
import * as path from 'node:path';
import { inspectLayers, type InspectReport } from '../inspect.js';
import { checkFiniteWeights } from '../model/finite.js';
import { loadModel } from '../model/io.js';
import { listLayers } from '../model/layers.js';
import { formatCount, formatPercent, renderTable } from '../report/format.js';
import { note, startBackend } from './common.js';

/** A conv layer this heavy is the one worth factorizing. */
const HEAVY_SHARE = 0.1;

export function registerInspect(program: Command): void {
  program
    .command('inspect')
    .description("list every layer's MACs, parameters and share of the model's MACs, with Scheme 2 ranks for each conv")
    .argument('<model>', 'model.json, or a folder holding one')
    .option('--json', 'print the report as JSON on stdout')
    .option('--no-spectra', 'skip the singular values behind the energy ranks (faster on huge models)')
    .action(async (modelPath: string, options: { json?: boolean; spectra: boolean }, command: Command) => {
      const backend = await startBackend(command);
      const loaded = await loadModel(modelPath);
      checkFiniteWeights(loaded.model);
      const layers = listLayers(loaded.model);
      const report = await inspectLayers(layers, options.spectra);
      if (report.unknownLayers.length) {
        note(chalk.yellow(`lowrank: warning: no cost known for ${report.unknownLayers.join(', ')} (shown as ?; not counted in the total)`));
      }
      const shown = path.relative(process.cwd(), loaded.jsonPath);
      if (options.json) {
        process.stdout.write(`${JSON.stringify({ backend, model: shown, ...report }, null, 2)}\n`);
      } else {
        process.stdout.write(`${renderInspect(shown, report)}\n`);
      }
      loaded.model.dispose();
    });
}

const dims = (xs: number[] | null, sep: string): string => (xs ? xs.join(sep) : '');

export function renderInspect(model: string, report: InspectReport): string {
  const rows = report.layers.map((l) => {
    const heavy = l.macShare !== null && l.macShare >= HEAVY_SHARE && l.kernelSize !== null;
    const mark = (s: string) => (heavy ? chalk.bold.yellow(s) : s);
    const out = Array.isArray(l.outputShape[0]) ? (l.outputShape as number[][]).map((s) => s.join('×')).join(', ') : (l.outputShape as number[]).join('×');
    return [
      mark(l.name),
      l.className,
      dims(l.kernelSize, '×'),
      l.inChannels !== null && l.outChannels !== null ? `${l.inChannels}→${l.outChannels}` : '',
      dims(l.strides, ','),
      out,
      mark(formatCount(l.macs)),
      mark(formatPercent(l.macShare)),
      formatCount(l.params),
    ];
  });
  const table = renderTable(
    [
      { header: 'layer' }, { header: 'class' }, { header: 'kernel' }, { header: 'in→out' }, { header: 'stride' },
      { header: 'output' }, { header: 'MACs', align: 'right' }, { header: 'share', align: 'right' }, { header: 'params', align: 'right' },
    ],
    rows,
    [['total', '', '', '', '', '', formatCount(report.totalMacs), '100%', formatCount(report.totalParams)]],
  );
  const convs = report.layers.filter((l) => l.scheme2 !== null);
  const parts = [`${chalk.bold(model)}: MACs and parameters per example`, table];
  if (convs.length) {
    parts.push(
      '',
      chalk.bold('Scheme 2 ranks (kh×1 then 1×kw): full rank, largest rank that still saves MACs, ranks keeping 90/95/99 % of the kernel energy'),
      renderTable(
        [
          { header: 'layer' }, { header: 'full', align: 'right' }, { header: 'break-even', align: 'right' },
          { header: '90%', align: 'right' }, { header: '95%', align: 'right' }, { header: '99%', align: 'right' },
        ],
        convs.map((l) => {
          const s = l.scheme2!;
          return [l.name, String(s.fullRank), String(s.breakEvenRank), String(s.energyRanks['0.9']), String(s.energyRanks['0.95']), String(s.energyRanks['0.99'])];
        }),
      ),
    );
  }
  return parts.join('\n');
}
