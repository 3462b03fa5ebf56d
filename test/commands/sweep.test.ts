import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import sharp from 'sharp';
import { loadModel } from '../../src/model/io.js';
import { useBackend } from '../../src/runtime/backend.js';
import { speedChartSpec, SERIES } from '../../src/report/chart.js';
import { sweepChart, type SweepFile } from '../../src/commands/sweep.js';
import { CHARCNN, FASHION_TEST, FASHION_TRAIN, cli, errorLine, folderSnapshot, imageSubset, runCli, tempDir, type CliRun } from '../helpers.js';

before(async () => {
  await useBackend('wasm');
});

/** A few held-out images per class, so that a sweep point evaluates in seconds. */
const EVAL = imageSubset(FASHION_TEST, 4);
/** Few images, few steps, few timed runs: the sweep's logic, not its figures. */
const FAST = ['--data', FASHION_TRAIN, '--samples', '40', '--eval-data', EVAL, '--iterations', '2', '--runs', '2', '--warmup', '0'];

/** A sweep in this process; the first one of the file runs in a fresh process (`runner` = runCli). */
const sweep = async (out: string, speedups: string, extra: string[] = [], runner: (args: string[]) => CliRun | Promise<CliRun> = cli): Promise<CliRun> =>
  runner(['--backend', 'wasm', 'sweep', CHARCNN, '--speedups', speedups, '--out', out, ...FAST, ...extra]);

const readJson = (out: string): SweepFile => JSON.parse(fs.readFileSync(path.join(out, 'sweep.json'), 'utf8'));

/** The plotted symbols of one series in vega's SVG (each carries its datum in aria-label). */
const symbols = (svg: string, series: string) =>
  [...svg.matchAll(/<path aria-label="([^"]*)" role="graphics-symbol" aria-roledescription="point"/g)].filter((m) => m[1].includes(`series: ${series}`)).length;

describe('lowrank sweep', () => {
  const out = path.join(tempDir(), 'sweep');
  let first: CliRun;
  let firstJson: SweepFile;

  before(async () => {
    // 4× is reachable on the fixture; 100× is not (conv1 alone keeps 2.9 % of the MACs). One point
    // here, more by the resumed runs below: each point is a whole fit and timing.
    first = await sweep(out, '4,100', ['--keep'], runCli);
    assert.equal(first.code, 0, first.stderr);
    firstJson = readJson(out);
  });

  test('writes sweep.json and sweep.csv with one row per point', () => {
    assert.deepEqual(firstJson.points.map((p) => p.target), [4]);
    for (const p of firstJson.points) {
      assert.ok(p.theoreticalSpeedup >= p.target, `${p.target}×: theoretical ${p.theoreticalSpeedup}`);
      assert.deepEqual(p.measured.map((m) => m.batch), [1, 32]);
      assert.ok(p.measured.every((m) => m.speedup > 0 && m.beforeMs > 0 && m.afterMs > 0));
      // conv3 saves 1 % of its MACs at the ranks that fit it well: the allocation may leave it as it is.
      assert.equal(Object.keys(p.ranks)[0], 'conv2');
      assert.ok(Object.keys(p.ranks).every((n) => ['conv2', 'conv3'].includes(n)));
      assert.ok(p.accuracy && p.accuracy.original > 0.5, 'labelled held-out images give accuracy');
      assert.ok(p.agreement.filter > 0 && p.agreement.data > 0);
    }
    const csv = fs.readFileSync(path.join(out, 'sweep.csv'), 'utf8').trim().split('\n');
    assert.equal(csv.length, 1 + firstJson.points.length);
    assert.match(csv[0], /^target,ranks,theoretical_speedup,measured_speedup_b1,measured_speedup_b32,/);
    assert.match(csv[1], /^4,"?conv2=\d+(,conv3=\d+)?"?,/);
    // The terminal table: one row per point.
    assert.match(first.stdout, /^4× +conv2=\d+(,conv3=\d+)? /m);
  });

  test('writes a valid PNG and an SVG with one symbol per point per series', async () => {
    const png = await sharp(path.join(out, 'sweep.png')).metadata();
    assert.equal(png.format, 'png');
    assert.ok(png.width! > 400 && png.height! > 200, `${png.width}×${png.height}`);
    const svg = fs.readFileSync(path.join(out, 'sweep.svg'), 'utf8');
    assert.equal(symbols(svg, SERIES.filter), firstJson.points.length);
    assert.equal(symbols(svg, SERIES.data), firstJson.points.length);
    // The spec is data: one datum per point and series, at the measured batch-32 speedup.
    const chart = sweepChart(firstJson);
    assert.equal(chart.data.length, 2 * firstJson.points.length);
    assert.deepEqual(chart.data.filter((d) => d.series === SERIES.data).map((d) => d.speedup), firstJson.points.map((p) => p.measured[1].speedup));
    assert.ok(JSON.stringify(speedChartSpec(chart)).includes(SERIES.filter));
  });

  test('without labels the chart shows agreement with the original', () => {
    const unlabelled: SweepFile = { ...firstJson, points: firstJson.points.map((p) => ({ ...p, accuracy: null })) };
    const chart = sweepChart(unlabelled);
    assert.match(chart.yTitle, /agreement/);
    assert.equal(chart.reference, null);
    assert.deepEqual(chart.data.filter((d) => d.series === SERIES.filter).map((d) => d.value), firstJson.points.map((p) => 100 * p.agreement.filter));
    assert.deepEqual(sweepChart(firstJson).data.filter((d) => d.series === SERIES.filter).map((d) => d.value), firstJson.points.map((p) => 100 * p.accuracy!.filter));
  });

  test('an unreachable target is reported with the maximum and skipped', () => {
    assert.match(first.stderr, /cannot reach 100×: these layers make the model at most 29\.\d\d× faster/);
    assert.match(first.stdout, /^100× +cannot be reached: at most 29\.\d\d×/m);
    assert.ok(!firstJson.points.some((p) => p.target === 100));
  });

  test('--keep saves every point\'s model, in the input\'s precision (float16) like compress', async () => {
    for (const p of firstJson.points) {
      assert.equal(p.model, path.join('models', `${p.target}x`));
      const { model, weights } = await loadModel(path.join(out, p.model!));
      assert.ok(model.layers.some((l) => l.name === 'conv2_v'));
      model.dispose();
      assert.ok(weights.some((w) => w.spec.name.startsWith('conv2_v')));
      for (const w of weights) assert.equal(w.spec.quantization?.dtype, 'float16', w.spec.name);
    }
  });

  /** A copy of the first run's sweep.json, changed by `edit`, in a new --out folder. */
  const sweepCopy = (edit: (json: any) => unknown): string => {
    const dir = path.join(tempDir(), 'sweep');
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'sweep.json'), JSON.stringify(edit(structuredClone(firstJson))));
    return dir;
  };

  test('a damaged sweep.json is refused: what is wrong and how to start over, exit 1, nothing changed', async () => {
    const cases: [(json: any) => unknown, RegExp][] = [
      [(j) => ((j.points[0].measured = []), j), /points\[0\]\.measured: needs a timing at batch 1 and 32/],
      [(j) => ((j.points = [{ target: 2, ranks: {} }]), j), /points\[0\]\.ranks: names no layer/],
      [(j) => ((j.points = [null, 5]), j), /points\[0\]: Expected object, received null/],
      [(j) => ((j.points[0].target = String(j.points[0].target)), j), /points\[0\]\.target: Expected number, received string/],
      [(j) => ((j.points = [j.points[0], j.points[0]]), j), /points: target 4 appears twice/],
    ];
    for (const [edit, pattern] of cases) {
      const dir = sweepCopy(edit);
      const snapshot = folderSnapshot(dir);
      const run = await sweep(dir, '4,8', ['--keep']);
      assert.equal(run.code, 1, run.stderr);
      assert.match(errorLine(run), /^lowrank: .*sweep\.json is damaged \(/);
      assert.match(errorLine(run), pattern);
      assert.match(errorLine(run), /; delete it to start the sweep over, or give another --out$/);
      assert.deepEqual(folderSnapshot(dir), snapshot);
    }
  });

  test('--keep over a foreign file or a symlink in a point\'s folder is refused before any fit', async () => {
    const foreign = sweepCopy((j) => ((j.points = []), j));
    fs.mkdirSync(path.join(foreign, 'models', '4x'), { recursive: true });
    fs.writeFileSync(path.join(foreign, 'models', '4x', 'notes.txt'), 'mine');
    const linked = sweepCopy((j) => ((j.points = []), j));
    const elsewhere = tempDir();
    fs.writeFileSync(path.join(elsewhere, 'keep.txt'), 'mine');
    fs.mkdirSync(path.join(linked, 'models'));
    fs.symlinkSync(elsewhere, path.join(linked, 'models', '4x'));
    for (const [dir, pattern] of [[foreign, /models[/\\]4x: .*--force replaces only an empty folder or a model lowrank wrote/], [linked, /models[/\\]4x is a symbolic link/]] as const) {
      const run = await sweep(dir, '4', ['--keep']);
      assert.equal(run.code, 1, run.stderr);
      assert.match(errorLine(run), pattern);
      assert.doesNotMatch(run.stderr, /sweep: |decoding/);
    }
    assert.equal(fs.readFileSync(path.join(foreign, 'models', '4x', 'notes.txt'), 'utf8'), 'mine');
    assert.deepEqual(fs.readdirSync(elsewhere), ['keep.txt']);
  });

  test('a rerun resumes: finished points are not computed again', async () => {
    const second = await sweep(out, '4,8', ['--keep']);
    assert.equal(second.code, 0, second.stderr);
    assert.match(second.stderr, /resuming: 1 of 2 points already in sweep\.json, 1 to compute/);
    assert.match(second.stderr, /sweep: 0\/1 points/);
    const json = readJson(out);
    assert.deepEqual(json.points.map((p) => p.target), [4, 8]);
    for (const p of firstJson.points) assert.deepEqual(json.points.find((q) => q.target === p.target), p);
    // Fewer MACs needs lower ranks.
    assert.ok(json.points[1].ranks.conv2 < json.points[0].ranks.conv2);
    // The files and the table hold every point, the resumed ones too.
    const csv = fs.readFileSync(path.join(out, 'sweep.csv'), 'utf8').trim().split('\n');
    assert.equal(csv.length, 3);
    assert.match(csv[2], /^8,"?conv2=\d+(,conv3=\d+)?"?,/);
    const svg = fs.readFileSync(path.join(out, 'sweep.svg'), 'utf8');
    assert.equal(symbols(svg, SERIES.filter), 2);
    assert.equal(symbols(svg, SERIES.data), 2);
    assert.match(second.stdout, /^4× +conv2=\d+(,conv3=\d+)? /m);
    assert.match(second.stdout, /^8× +conv2=\d+(,conv3=\d+)? /m);
  });

  test('a rerun with other settings is refused in one line and changes nothing', async () => {
    const snapshot = folderSnapshot(out);
    const run = await sweep(out, '4,8', ['--keep', '--iterations', '3']);
    assert.equal(run.code, 1);
    assert.match(errorLine(run), /^lowrank: --out .* holds a sweep with other settings \(iterations 2, now 3\); .*give a new --out$/);
    assert.doesNotMatch(run.stderr, /\n\s+at /, 'no stack trace');
    assert.deepEqual(folderSnapshot(out), snapshot);
  });
});

describe('lowrank sweep refuses', () => {
  test('a folder that holds no sweep', async () => {
    const out = tempDir();
    fs.writeFileSync(path.join(out, 'notes.txt'), 'mine');
    const run = await sweep(out, '4');
    assert.equal(run.code, 1);
    assert.match(errorLine(run), /holds no sweep\.json; give a new --out/);
    assert.deepEqual(fs.readdirSync(out), ['notes.txt']);
  });

  test('targets none of which can be reached, naming the maximum', async () => {
    const out = path.join(tempDir(), 'sweep');
    const run = await sweep(out, '50,100');
    assert.equal(run.code, 1);
    assert.match(errorLine(run), /none of --speedups 50,100 can be reached: .*at most 29\.\d\d×/);
    assert.ok(!fs.existsSync(out));
  });
});
