/** `lowrank evaluate`: one model's accuracy on a folder of images, to check the preprocessing before compressing. */
import type { Command } from 'commander';
import chalk from 'chalk';
import * as path from 'node:path';
import { listImages, skippedNote, type BatchStats, type PixelOptions } from '../data/images.js';
import { evaluateModel, nearChance, outputName, outputSize, type Evaluation } from '../commands/evaluate.js';
import { loadModel } from '../model/io.js';
import { formatPercent, renderTable } from '../report/format.js';
import { addImageOptions, note, startBackend, type ImageFlags } from './common.js';
import { parseFlag } from './flags.js';
import { checkFlagRules } from './rules.js';
import { imageSetup } from './images.js';

interface EvaluateFlags extends ImageFlags {
  data: string;
  batch: string;
  json?: boolean;
}

/** Confusions shown in the human-readable summary (--json has the whole matrix). */
const SHOWN_CONFUSIONS = 5;

export function registerEvaluate(program: Command): void {
  const command = program
    .command('evaluate')
    .description('top-1 and per-class accuracy, confusions and prediction counts of one model on a folder of images')
    .argument('<model>', 'model.json, or a folder holding one')
    .requiredOption('--data <dir>', 'images, one subfolder per class; images at the top level count as unlabelled')
    .option('--batch <n>', 'images per prediction', '64')
    .option('--json', 'print the report as JSON on stdout');
  addImageOptions(command).action(async (modelPath: string, flags: EvaluateFlags, cmd: Command) => {
    const warnings = checkFlagRules(cmd);
    const backend = await startBackend(cmd);
    for (const w of warnings) note(chalk.yellow(`lowrank: warning: ${w}`));
    const batch = parseFlag('--eval-batch', flags.batch, '--batch');
    const setup = imageSetup(cmd, flags, modelPath);
    const images = listImages(flags.data, setup.labels);
    const loaded = await loadModel(modelPath);
    const outputs = outputSize(loaded.model);
    if (images.classes.length && images.classes.length !== outputs) {
      note(chalk.yellow(`lowrank: warning: ${images.classes.length} classes but the model has ${outputs} outputs; class i is scored as output i, so check the class order (--labels)`));
    }
    note(`lowrank: predicting ${images.entries.length} files`);
    const stats: BatchStats = { skipped: [], decoded: 0 };
    const e = await evaluateModel(loaded.model, images.entries, images.classes, setup.pixels, batch, stats);
    const skipped = skippedNote(stats);
    if (skipped) note(chalk.yellow(`lowrank: warning: ${skipped}`));
    if (nearChance(e)) {
      const majority = e.perClass.reduce((a, c) => (c.images > a.images ? c : a));
      note(chalk.yellow(
        `lowrank: hint: top-1 ${formatPercent(e.accuracy, 1)} is near chance (${formatPercent(e.chance, 1)} for always answering ${majority.name}): `
        + 'the preprocessing probably differs from the model\'s training — check --scale/--offset (e.g. --scale 2/255 --offset -1 for [-1, 1] pixels), --standardize, --resize and the class order (--labels)',
      ));
    }
    const model = path.relative(process.cwd(), loaded.jsonPath);
    const report = evaluateReport(backend, model, flags.data, setup.pixels, e, stats);
    if (flags.json) process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
    else process.stdout.write(`${renderEvaluate(report, e)}\n`);
    loaded.model.dispose();
  });
}

export function evaluateReport(backend: string, model: string, data: string, pixels: PixelOptions, e: Evaluation, stats: BatchStats) {
  return {
    backend,
    model,
    data,
    pixels,
    images: { read: e.images, skipped: stats.skipped.length, labeled: e.labeled },
    skippedFiles: stats.skipped.map((f) => path.relative(process.cwd(), f)),
    outputs: e.outputs,
    classes: e.classes,
    accuracy: e.accuracy,
    correct: e.correct,
    chance: e.chance,
    perClass: e.perClass,
    topConfusions: e.topConfusions,
    confusion: e.confusion,
    predicted: e.predicted.map((count, i) => ({ class: outputName(e.classes, i), count })),
  };
}

type EvaluateReport = ReturnType<typeof evaluateReport>;

function describePixels(p: PixelOptions): string {
  const mapping = p.standardize
    ? 'per-image zero mean, unit variance'
    : `0–255 × ${Number(p.scale.toPrecision(6))} ${p.offset < 0 ? '−' : '+'} ${Math.abs(p.offset)}`;
  return `pixels ${mapping}, resize ${p.resize}`;
}

export function renderEvaluate(r: EvaluateReport, e: Evaluation): string {
  const skipped = r.images.skipped ? ` (${r.images.skipped} skipped)` : '';
  const lines = [
    `${chalk.bold(r.model)} on ${r.data}: ${r.images.read} images${skipped}, ${e.classes.length ? `${e.classes.length} classes, ` : ''}${e.outputs} outputs · backend ${r.backend}`,
    chalk.dim(describePixels(r.pixels)),
  ];
  const rowCount = Math.max(e.classes.length, e.outputs);
  const predictedCell = (i: number) => String(e.predicted[i] ?? 0);
  if (e.accuracy === null) {
    const rows = Array.from({ length: rowCount }, (_, i) => [outputName(e.classes, i), predictedCell(i), formatPercent((e.predicted[i] ?? 0) / e.images)]);
    lines.push(
      'no image is labelled (no class subfolders): prediction counts only',
      '',
      renderTable([{ header: 'class' }, { header: 'predicted', align: 'right' }, { header: 'share', align: 'right' }], rows),
    );
    return lines.join('\n');
  }
  const mistakeOf = (name: string) => e.topConfusions.find((c) => c.true === name);
  const rows = Array.from({ length: rowCount }, (_, i) => {
    const c = e.perClass[i];
    const mistake = c ? mistakeOf(c.name) : undefined;
    return [
      outputName(e.classes, i),
      c ? String(c.images) : '',
      c ? String(c.correct) : '',
      c && c.accuracy !== null ? formatPercent(c.accuracy, 2) : '',
      predictedCell(i),
      mistake ? `${mistake.predicted} (${mistake.count})` : '',
    ];
  });
  const unlabelled = e.images - e.labeled;
  lines.push(
    `top-1 accuracy: ${chalk.bold(formatPercent(e.accuracy, 2))} (${e.correct} of ${e.labeled} labelled images${unlabelled ? `; ${unlabelled} unlabelled count in "predicted" only` : ''})`,
    '',
    renderTable(
      [
        { header: 'class' }, { header: 'images', align: 'right' }, { header: 'correct', align: 'right' }, { header: 'accuracy', align: 'right' },
        { header: 'predicted', align: 'right' }, { header: 'most often taken for' },
      ],
      rows,
      [['all', String(e.labeled), String(e.correct), formatPercent(e.accuracy, 2), String(e.images), '']],
    ),
  );
  const shown = e.topConfusions.slice(0, SHOWN_CONFUSIONS).map((c) => `${c.true} → ${c.predicted}: ${c.count}`);
  if (shown.length) lines.push('', `most frequent confusions (true → predicted): ${shown.join(' · ')}`);
  return lines.join('\n');
}
