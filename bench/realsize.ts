/**
 * Real-size models: `compress --speedup 2 --data` on the MobileNetV2 (224 px) and InceptionV3
 * (299 px, 5.7 GMACs) that the npm package nsfwjs 4.4.0 ships, and on a Teachable-Machine-shaped
 * model built from that MobileNetV2 (teachable.ts) with a head trained on two classes of the images. The package is fetched with
 * `npm pack` into a cache folder outside the project (LOWRANK_BENCH_CACHE, default
 * ~/.cache/lowrank-bench) and its UMD modules (the model JSON, base64 weight shards) are converted
 * to tfjs model folders there. Natural images come from `--images <dir>` (or LOWRANK_BENCH_IMAGES):
 * any folder of photos, read recursively; a seeded shuffle splits them into fitting images and other
 * images, on which agreement with the original's top-1 is the accuracy measure (no labels needed).
 * The Teachable Machine case needs class subfolders (`<class>/` or `<split>/<class>/`): it takes
 * the first two classes in sorted order, or those of `--classes a,b`, and draws all its images from
 * them. `--tm-export <model.json>` builds it on the base of a Teachable Machine image export (any:
 * they all carry the same MobileNetV2 0.35) instead of nsfwjs' MobileNetV2 1.0. `--cases
 * mobilenet,inception,tm` picks cases (default: all).
 * Reports wall and CPU time, peak RSS and the wasm heap's peak per stage (heap-hook.ts).
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as vm from 'node:vm';
import { mulberry32 } from '../src/runtime/random.js';
import { ROOT, heading, markdownTable, timeCli } from './common.js';
import { TEACHABLE_FLAGS, buildOnTeachableBase, buildTeachableModel, filesByClass, labelledSplit, type LabelledSplit, type TeachableReport } from './teachable.js';

const PACKAGE = 'nsfwjs@4.4.0';
const CACHE = process.env.LOWRANK_BENCH_CACHE ?? path.join(os.homedir(), '.cache', 'lowrank-bench');
const MODELS = ['mobilenet_v2', 'inception_v3'] as const;
/** nsfwjs' preprocessing: pixels to [0, 1]. */
const PIXELS = ['--scale', '1/255'];
const CASES = ['mobilenet', 'inception', 'tm'] as const;
/**
 * Teachable Machine case: images of each class that train the head (the first FIT of them are the
 * fitting images) and other images: 500 others per class, because on 100 per class a fine-tuned
 * model seemed to gain 1.5 points of agreement that 1,000 photos showed to be noise.
 */
const TM_PER_CLASS = { train: 200, other: 500 };
const TM_FIT_PER_CLASS = 100;

/** Evaluates one of the package's UMD modules and returns what it exports. */
function umdExport(file: string): unknown {
  const module = { exports: {} as unknown };
  vm.runInNewContext(fs.readFileSync(file, 'utf8'), { module, exports: module.exports });
  const value = module.exports as { default?: unknown };
  return value.default ?? value;
}

/** The package's models as tfjs model folders in the cache (fetched and converted once). */
function fetchModels(): Record<(typeof MODELS)[number], string> {
  const root = path.join(CACHE, 'nsfwjs-4.4.0');
  const out = Object.fromEntries(MODELS.map((m) => [m, path.join(root, 'models', m, 'model.json')])) as Record<(typeof MODELS)[number], string>;
  if (MODELS.every((m) => fs.existsSync(out[m]))) return out;
  fs.mkdirSync(root, { recursive: true });
  const tgz = execFileSync('npm', ['pack', PACKAGE, '--pack-destination', root, '--silent'], { encoding: 'utf8' }).trim().split('\n').pop()!;
  execFileSync('tar', ['xzf', path.join(root, tgz), '-C', root]);
  for (const name of MODELS) {
    const src = path.join(root, 'package', 'dist', 'models', name);
    const dir = path.dirname(out[name]);
    fs.mkdirSync(dir, { recursive: true });
    let json = umdExport(path.join(src, 'model.min.js'));
    if (typeof json === 'string') json = JSON.parse(json);
    const manifest = (json as { weightsManifest: { paths: string[] }[] }).weightsManifest;
    for (const file of manifest.flatMap((g) => g.paths)) {
      const base64 = umdExport(path.join(src, `${file}.min.js`)) as string;
      fs.writeFileSync(path.join(dir, file), Buffer.from(base64, 'base64'));
    }
    fs.writeFileSync(out[name], JSON.stringify(json));
  }
  return out;
}

/** Image files under `dir`, sorted. */
function imageFiles(dir: string): string[] {
  return fs.readdirSync(dir, { recursive: true, encoding: 'utf8' }).filter((f) => /\.(jpe?g|png|webp)$/i.test(f)).sort().map((f) => path.join(dir, f));
}

/** Folders of `fit` and `other` images (symlinks), drawn by a seeded shuffle of `files`. */
function imageSets(files: string[], fit: number, other: number): { fit: string; other: string } {
  const order = mulberry32(7).shuffle([...files]);
  if (order.length < fit + other) throw new Error(`--images: ${order.length} images; this bench needs ${fit + other}`);
  const sets = { fit: path.join(CACHE, `images-fit-${fit}`), other: path.join(CACHE, `images-other-${other}`) };
  const fill = (dir: string, list: string[]) => {
    fs.rmSync(dir, { recursive: true, force: true });
    fs.mkdirSync(dir, { recursive: true });
    list.forEach((f, i) => fs.symlinkSync(f, path.join(dir, `${String(i).padStart(4, '0')}${path.extname(f)}`)));
  };
  fill(sets.fit, order.slice(0, fit));
  fill(sets.other, order.slice(fit, fit + other));
  return sets;
}

interface StageRecord {
  name: string;
  startMs: number;
  endMs: number;
  rssBytes: number;
  heapBytes: number;
}

const MiB = 1024 * 1024;

function runCase(title: string, args: string[], pixels = PIXELS): void {
  const load = os.loadavg()[0].toFixed(1);
  const out = path.join(CACHE, 'out');
  const run = timeCli(['--backend', 'wasm', 'compress', ...args, ...pixels, '--out', out, '--force', '--json'], [path.join(ROOT, 'dist', 'bench', 'heap-hook.js')]);
  const stages = JSON.parse(/lowrank-bench stages (.*)/.exec(run.stderr)![1]) as StageRecord[];
  const report = JSON.parse(run.stdout) as { theoreticalSpeedup: number; dataReconstruction: { agreement: { data: number } } };
  const agreement = report.dataReconstruction.agreement.data;
  const estimate = /estimated time: ([^(]+)/.exec(run.stderr)?.[1].trim() ?? '—';
  heading(`${title} (load average ${load} at start)`);
  process.stdout.write(`\`lowrank compress ${args.join(' ')} ${pixels.join(' ')}\`: wall ${(run.wallMs / 1000).toFixed(0)} s, CPU ${(run.cpuMs / 1000).toFixed(0)} s, peak RSS ${run.maxRssMiB.toFixed(0)} MiB, ${report.theoreticalSpeedup.toFixed(2)}× by MACs, estimate printed: ${estimate}, agreement with the original on the other images: ${(100 * agreement).toFixed(1)} %\n\n`);
  markdownTable(['stage', 'wall (s)', 'peak RSS (MiB)', 'wasm heap peak (MiB)'], stages.map((s) => [
    s.name, ((s.endMs - s.startMs) / 1000).toFixed(1), (s.rssBytes / MiB).toFixed(0), (s.heapBytes / MiB).toFixed(0),
  ]));
}

/** Folders `<dir>/<class>/NNNN.ext` of symlinks to `entries`, so lowrank also scores them against the model's labels. */
function fillLabelled(dir: string, entries: { file: string; label: number | null }[], classes: string[]): string {
  fs.rmSync(dir, { recursive: true, force: true });
  entries.forEach((e, i) => {
    const folder = path.join(dir, classes[e.label!]);
    fs.mkdirSync(folder, { recursive: true });
    fs.symlinkSync(e.file, path.join(folder, `${String(i).padStart(4, '0')}${path.extname(e.file)}`));
  });
  return dir;
}

function reportHead(r: TeachableReport): void {
  const pct = (x: number) => `${(100 * x).toFixed(1)} %`;
  const b = r.border;
  process.stdout.write(`Head (Dense 100 relu, Dense ${r.classes.length} softmax; Adam 0.001, 50 epochs, batch 16) on ${r.classes.join(' / ')}: `
    + `accuracy ${pct(r.trainAccuracy)} on its ${r.trainImages} training images, ${pct(r.otherAccuracy)} on ${r.otherImages} other images.\n\n`);
  if (!b) return;
  process.stdout.write(`Base fed [-1, 1] (pixel range folded into Conv1) against the original fed [0, 1], on the ${b.images} other images: `
    + `out_relu relative error ${pct(b.interior)} on its 6×6 interior, ${pct(b.border)} on its last row and column; `
    + `pooled features ${pct(b.pooledMean)} mean, ${pct(b.pooledMax)} worst; head's top-1 changed on ${b.decisionsChanged} images; `
    + `the same head trained on the original base's features: ${pct(b.originalOtherAccuracy)} on the other images.\n\n`);
}

/**
 * The Teachable Machine case, or the one-line reason it cannot run on these images: on the base of
 * the Teachable Machine export `exported` (model.json) when given, else on nsfwjs' MobileNetV2.
 */
async function teachableCase(models: { mobilenet_v2: string }, images: string, files: string[], chosen: string | undefined, exported: string | undefined): Promise<void> {
  const byClass = filesByClass(images, files);
  const base = exported ? 'Teachable Machine\'s own MobileNetV2 0.35' : 'nsfwjs\' MobileNetV2 1.0';
  const title = `Teachable Machine model on ${base} (trained head), --speedup 2`;
  if (byClass.size < 2) {
    heading(title);
    process.stdout.write(`skipped: ${images} has no class subfolders (<class>/ or <split>/<class>/); this case trains a head on two classes\n`);
    return;
  }
  const classes = chosen ? chosen.split(',').map((c) => c.trim()) : [...byClass.keys()].sort().slice(0, 2);
  if (classes.length < 2 || new Set(classes).size !== classes.length) throw new Error(`--classes ${chosen}: name two or more different class folders`);
  const split: LabelledSplit = labelledSplit(byClass, classes, TM_PER_CLASS);
  const dir = path.join(CACHE, `teachable-${exported ? 'tm-' : ''}${classes.join('-')}`);
  const built = exported ? await buildOnTeachableBase(exported, dir, split) : await buildTeachableModel(models.mobilenet_v2, dir, split);
  // The user's own photos fit; the images neither the head nor the fit saw check.
  const fit = fillLabelled(path.join(CACHE, 'teachable-fit'), split.train.filter((e, i) => i % TM_PER_CLASS.train < TM_FIT_PER_CLASS), classes);
  const other = fillLabelled(path.join(CACHE, 'teachable-other'), split.other, classes);
  heading(`Teachable-Machine-shaped model: ${dir}`);
  reportHead(built);
  runCase(`${title} on ${classes.length * TM_FIT_PER_CLASS} images`, [path.join(dir, 'model.json'), '--speedup', '2', '--data', fit, '--eval-data', other], TEACHABLE_FLAGS);
}

/** `explicit`: named on the command line (then missing images are an error, not a skip). */
export async function runRealsizeBench(argv: string[], explicit: boolean): Promise<void> {
  const option = (name: string) => (argv.indexOf(name) >= 0 ? argv[argv.indexOf(name) + 1] : undefined);
  const images = option('--images') ?? process.env.LOWRANK_BENCH_IMAGES;
  const missing = 'realsize needs natural images: npm run bench -- realsize --images <dir> (or LOWRANK_BENCH_IMAGES)';
  if (!images && explicit) throw new Error(missing);
  if (!images) {
    heading('real-size models');
    process.stdout.write(`skipped: ${missing}\n`);
    return;
  }
  const cases = option('--cases')?.split(',') ?? [...CASES];
  const unknown = cases.find((c) => !(CASES as readonly string[]).includes(c));
  if (unknown) throw new Error(`--cases: unknown case '${unknown}'; choose from ${CASES.join(', ')}`);
  const models = fetchModels();
  const files = imageFiles(images);
  if (cases.includes('mobilenet')) {
    const mobile = imageSets(files, 200, 200);
    runCase('MobileNetV2 224 px, --speedup 2 on 200 images', [models.mobilenet_v2, '--speedup', '2', '--data', mobile.fit, '--eval-data', mobile.other]);
  }
  if (cases.includes('inception')) {
    const inception = imageSets(files, 100, 200);
    runCase('InceptionV3 299 px, --speedup 2 on 100 images, exact solves only', [
      models.inception_v3, '--speedup', '2', '--data', inception.fit, '--samples', '100', '--iterations', '0', '--eval-data', inception.other,
    ]);
  }
  const exported = option('--tm-export');
  if (exported && !fs.existsSync(exported)) throw new Error(`--tm-export ${exported}: no such file; give the model.json of a Teachable Machine image export`);
  if (cases.includes('tm')) await teachableCase(models, images, files, option('--classes'), exported);
}
