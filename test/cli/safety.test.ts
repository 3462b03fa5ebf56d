/**
 * Files lowrank writes and reads, end to end through the CLI: what `--force` may replace, atomic
 * and race-free output, Ctrl-C, kept weight bytes and quantization, metadata, and refusing
 * non-regular or oversized model files.
 */
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { useBackend } from '../../src/runtime/backend.js';
import { readModelFiles, saveModel } from '../../src/model/io.js';
import { CHARCNN, FASHION_TRAIN, ROOT, cli, errorLine, runCli, tempDir, type CliRun } from '../helpers.js';

before(async () => {
  await useBackend('wasm');
});

/** A small conv model saved with float32 weights in a fresh folder `<tmp>/work/model`; `bigUnits` adds a dense layer of 384 × bigUnits weights. */
async function smallModel(bigUnits = 0): Promise<string> {
  const model = tf.sequential({
    layers: [
      tf.layers.conv2d({ name: 'conv1', inputShape: [8, 8, 2], filters: 4, kernelSize: 3, padding: 'same' }),
      tf.layers.conv2d({ name: 'conv2', filters: 6, kernelSize: 3, padding: 'same' }),
      tf.layers.flatten({ name: 'flat' }),
      ...(bigUnits ? [tf.layers.dense({ name: 'big', units: bigUnits, kernelInitializer: 'zeros' })] : []),
      tf.layers.dense({ name: 'dense', units: 3 }),
    ],
  });
  const dir = path.join(tempDir(), 'work', 'model');
  await saveModel(model, dir);
  return path.join(dir, 'model.json');
}

const compressArgs = (input: string, out: string, ...more: string[]) => ['--backend', 'wasm', 'compress', input, '--layers', 'conv2', '--rank', '2', '--out', out, ...more];

/** Every file under `dir` with its contents, to prove nothing changed. */
function treeSnapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const entry of fs.readdirSync(dir, { recursive: true, withFileTypes: true })) {
    const p = path.join(entry.parentPath ?? (entry as any).path, entry.name);
    out[path.relative(dir, p)] = entry.isFile() ? fs.readFileSync(p).toString('base64') : entry.isDirectory() ? 'dir' : 'other';
  }
  return out;
}

function expectRefused(run: CliRun, pattern: RegExp): void {
  assert.equal(run.code, 1, run.stderr);
  assert.match(errorLine(run), pattern);
  assert.doesNotMatch(run.stderr, /^\s+at /m, 'no stack trace');
}

function runCliAsync(args: string[], cwd = ROOT): { child: ReturnType<typeof spawn>; done: Promise<CliRun & { signal: string | null }>; stderr: () => string } {
  const child = spawn(process.execPath, [path.join(ROOT, 'bin', 'lowrank.js'), ...args], { cwd, env: { ...process.env, NO_COLOR: '1', FORCE_COLOR: '0' } });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d) => (stdout += d));
  child.stderr!.on('data', (d) => (stderr += d));
  const done = new Promise<CliRun & { signal: string | null }>((resolve) => {
    child.on('close', (code, signal) => resolve({ code: code ?? -1, signal, stdout, stderr }));
  });
  return { child, done, stderr: () => stderr };
}

const partialsBeside = (out: string): string[] => fs.readdirSync(path.dirname(out)).filter((n) => n.startsWith(`.${path.basename(out)}.partial-`));

describe('--force never deletes what lowrank did not write (items 1–2)', () => {
  test('--out a folder that contains the input (its parent) is refused, even with --force', async () => {
    const input = await smallModel();
    const work = path.dirname(path.dirname(input));
    fs.writeFileSync(path.join(work, 'keep.txt'), 'mine');
    const before = treeSnapshot(work);
    expectRefused(await cli(compressArgs(input, work, '--force')), /holds the input model/);
    assert.deepEqual(treeSnapshot(work), before);
  });

  test('--out . run from the folder holding the model is refused', async () => {
    const input = await smallModel();
    const dir = path.dirname(input);
    const before = treeSnapshot(dir);
    expectRefused(runCli(compressArgs('model.json', '.', '--force'), dir), /--out \. is the working folder/);
    assert.deepEqual(treeSnapshot(dir), before);
  });

  test('an empty --out is refused', async () => {
    const input = await smallModel();
    const work = path.dirname(path.dirname(input));
    const before = treeSnapshot(work);
    expectRefused(await cli(compressArgs(path.join('model', 'model.json'), '', '--force'), work), /--out is empty/);
    assert.deepEqual(treeSnapshot(work), before);
  });

  test('an input reached through a symlink is recognised (real paths are compared)', async () => {
    const input = await smallModel();
    const real = path.dirname(input);
    const alias = path.join(path.dirname(real), 'alias');
    fs.symlinkSync(real, alias);
    const before = treeSnapshot(real);
    expectRefused(await cli(compressArgs(path.join(alias, 'model.json'), real, '--force')), /holds the input model/);
    assert.deepEqual(treeSnapshot(real), before);
  });

  test('--force replaces an empty folder or lowrank\'s own output, never a folder with other files', async () => {
    const input = await smallModel();
    const out = path.join(tempDir(), 'out');
    fs.mkdirSync(out);
    assert.equal((await cli(compressArgs(input, out, '--force'))).code, 0, 'empty folder');
    const again = await cli(compressArgs(input, out, '--force'));
    assert.equal(again.code, 0, again.stderr);
    fs.writeFileSync(path.join(out, 'notes.txt'), 'mine');
    const before = treeSnapshot(out);
    expectRefused(await cli(compressArgs(input, out, '--force')), /holds files lowrank did not write \(notes\.txt\)/);
    assert.deepEqual(treeSnapshot(out), before);
    const foreign = tempDir();
    fs.cpSync(path.dirname(CHARCNN), foreign, { recursive: true });
    expectRefused(await cli(compressArgs(input, foreign, '--force')), /not written by lowrank/);
  });
});

describe('output appears atomically, and only once (items 3–4)', () => {
  test('two concurrent runs writing the same --out: exactly one succeeds, its model is complete', async () => {
    const input = await smallModel(25_000); // ~38 MB: saving takes a while
    const out = path.join(tempDir(), 'out');
    const runs = await Promise.all([0, 1].map(() => runCliAsync(compressArgs(input, out)).done));
    const ok = runs.filter((r) => r.code === 0);
    assert.equal(ok.length, 1, runs.map((r) => `${r.code}: ${errorLine(r)}`).join(' | '));
    const failed = runs.find((r) => r.code !== 0)!;
    assert.match(errorLine(failed), /(already exists|appeared while lowrank was working)/);
    const files = readModelFiles(out);
    assert.equal(files.weightBytes, files.shards.reduce((a, s) => a + s.bytes, 0));
    assert.deepEqual(partialsBeside(out), []);
  });

  test('Ctrl-C while fitting exits 130 and leaves no output', async () => {
    const out = path.join(tempDir(), 'out');
    const run = runCliAsync(['--backend', 'wasm', 'compress', CHARCNN, '--layers', 'conv2', '--rank', '8', '--out', out, '--data', FASHION_TRAIN, '--samples', '200']);
    while (!/conv2: /.test(run.stderr()) && run.child.exitCode === null) await new Promise((r) => setTimeout(r, 50));
    run.child.kill('SIGINT');
    const result = await run.done;
    assert.equal(result.code, 130, result.stderr);
    assert.match(result.stderr, /interrupted \(SIGINT\)/);
    assert.deepEqual(fs.readdirSync(path.dirname(out)), []);
  });

  const hasScript = spawnSync('script', ['--version']).status === 0;
  test('Ctrl-C on a terminal shows the cursor again that the progress bar hid', { skip: !hasScript && 'needs util-linux script for a terminal' }, async () => {
    const out = path.join(tempDir(), 'out');
    const command = [process.execPath, path.join(ROOT, 'bin', 'lowrank.js'), '--backend', 'wasm', 'compress', CHARCNN, '--layers', 'conv2', '--rank', '8', '--out', out, '--data', FASHION_TRAIN, '--samples', '200'];
    // script runs the command on a pseudo-terminal; a ^C typed into it interrupts the command.
    const child = spawn('script', ['-qefc', command.map((a) => `'${a}'`).join(' '), '/dev/null'], { env: { ...process.env, NO_COLOR: '1' } });
    let screen = '';
    child.stdout.on('data', (d) => (screen += d));
    const done = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
    while (!/conv2: /.test(screen) && child.exitCode === null) await new Promise((r) => setTimeout(r, 50));
    child.stdin.write('\x03');
    assert.equal(await done, 130, screen.slice(-500));
    assert.match(screen, /\x1b\[\?25h/);
    assert.ok(screen.lastIndexOf('\x1b[?25h') > screen.lastIndexOf('\x1b[?25l'), 'cursor shown after it was last hidden');
    assert.deepEqual(fs.readdirSync(path.dirname(out)), []);
  });

  test('SIGTERM while saving removes the partial folder', async () => {
    // A model of many 4 MB weights, saved by a child process; killed once its partial folder exists.
    const out = path.join(tempDir(), 'out');
    const script = `
      import * as tf from '@tensorflow/tfjs';
      import { exitCleanlyOnSignals } from ${JSON.stringify(path.join(ROOT, 'dist', 'src', 'runtime', 'interrupt.js'))};
      import { saveModel } from ${JSON.stringify(path.join(ROOT, 'dist', 'src', 'model', 'io.js'))};
      exitCleanlyOnSignals();
      const layers = [tf.layers.dense({ inputShape: [1000], units: 1000, kernelInitializer: 'zeros' })];
      for (let i = 0; i < 60; i++) layers.push(tf.layers.dense({ units: 1000, kernelInitializer: 'zeros' }));
      await saveModel(tf.sequential({ layers }), ${JSON.stringify(out)});
      process.stdout.write('saved');
    `;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { cwd: ROOT });
    let stdout = '';
    child.stdout.on('data', (d) => (stdout += d));
    const done = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
    let seen = false;
    while (!seen && child.exitCode === null) {
      seen = partialsBeside(out).length > 0;
      if (!seen) await new Promise((r) => setTimeout(r, 5));
    }
    assert.ok(seen, 'the save started');
    child.kill('SIGTERM');
    const code = await done;
    assert.equal(stdout, '', 'the save was interrupted, not finished');
    assert.equal(code, 143);
    assert.deepEqual(fs.readdirSync(path.dirname(out)), []);
  });

  test('partial folders of killed runs are swept; unrecognised look-alikes are reported, not removed', async () => {
    const input = await smallModel();
    const parent = tempDir();
    const out = path.join(parent, 'out');
    const deadPid = spawnSync(process.execPath, ['-e', '0']).pid;
    const stale = path.join(parent, `.out.partial-${deadPid}-abc123`);
    fs.mkdirSync(stale);
    fs.writeFileSync(path.join(stale, '.lowrank-partial'), JSON.stringify({ pid: deadPid }));
    fs.writeFileSync(path.join(stale, 'shard1'), 'half');
    const foreign = path.join(parent, `.out.partial-${deadPid}-zzz999`);
    fs.mkdirSync(foreign);
    fs.writeFileSync(path.join(foreign, 'mine.txt'), 'x');
    const run = await cli(compressArgs(input, out));
    assert.equal(run.code, 0, run.stderr);
    assert.ok(!fs.existsSync(stale), 'stale partial folder removed');
    assert.match(run.stderr, /removed .*\.out\.partial-\d+-abc123, left by an interrupted run/);
    assert.deepEqual(fs.readdirSync(foreign), ['mine.txt']);
    assert.match(run.stderr, /warning: .*zzz999 looks like an unfinished output/);
  });
});

/** The raw bytes of each weight of a saved model, by name, with its manifest entry. */
function weightBytes(jsonPath: string): Map<string, { spec: tf.io.WeightsManifestEntry; bytes: Buffer }> {
  const files = readModelFiles(jsonPath);
  const all = Buffer.concat(files.shards.map((s) => fs.readFileSync(s.path)));
  return new Map(files.weights.map((w) => [w.spec.name, { spec: w.spec, bytes: all.subarray(w.offset, w.offset + w.bytes) }]));
}

/** Loads a saved model with stock tf.loadLayersModel, collecting tfjs' console warnings. */
async function stockLoad(dir: string): Promise<{ model: tf.LayersModel; warnings: string[] }> {
  const json = JSON.parse(fs.readFileSync(path.join(dir, 'model.json'), 'utf8'));
  const data = Buffer.concat(json.weightsManifest.flatMap((g: any) => g.paths).map((p: string) => fs.readFileSync(path.join(dir, p))));
  const warnings: string[] = [];
  const warn = console.warn;
  console.warn = (...args: unknown[]) => warnings.push(args.join(' '));
  try {
    const model = await tf.loadLayersModel(tf.io.fromMemory({
      modelTopology: json.modelTopology,
      weightSpecs: json.weightsManifest.flatMap((g: any) => g.weights),
      weightData: data.buffer.slice(data.byteOffset, data.byteOffset + data.length),
    }));
    model.predict(tf.zeros([1, ...(model.inputs[0].shape.slice(1) as number[])]));
    return { model, warnings };
  } finally {
    console.warn = warn;
  }
}

/** Rewrites a float32 model's shard as uint8 affine-quantized, as the tfjs-converter does. */
function quantizeUint8(jsonPath: string): void {
  const weights = weightBytes(jsonPath);
  const specs: tf.io.WeightsManifestEntry[] = [];
  const chunks: Buffer[] = [];
  for (const { spec, bytes } of weights.values()) {
    const values = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length));
    const min = Math.min(0, ...values);
    const scale = (Math.max(0, ...values) - min) / 255 || 1;
    chunks.push(Buffer.from(Uint8Array.from(values, (v) => Math.round((v - min) / scale))));
    specs.push({ ...spec, quantization: { dtype: 'uint8', min, scale } });
  }
  const dir = path.dirname(jsonPath);
  const json = JSON.parse(fs.readFileSync(jsonPath, 'utf8'));
  for (const p of json.weightsManifest.flatMap((g: any) => g.paths)) fs.rmSync(path.join(dir, p));
  fs.writeFileSync(path.join(dir, 'q.bin'), Buffer.concat(chunks));
  json.weightsManifest = [{ paths: ['q.bin'], weights: specs }];
  fs.writeFileSync(jsonPath, JSON.stringify(json));
}

describe('the output is at least as good a file as the input (items 5–7)', () => {
  test('float16 input: untouched weights keep their bytes, new ones are float16, the file shrinks and stock tfjs loads it', async () => {
    const out = path.join(tempDir(), 'out');
    const run = await cli(['--backend', 'wasm', 'compress', CHARCNN, '--layers', 'conv2', '--rank', '8', '--out', out, '--json']);
    assert.equal(run.code, 0, run.stderr);
    const input = weightBytes(CHARCNN);
    const output = weightBytes(path.join(out, 'model.json'));
    for (const [name, w] of output) {
      if (name.startsWith('conv2_')) assert.deepEqual(w.spec.quantization, { dtype: 'float16' }, name);
      else assert.ok(input.get(name)!.bytes.equals(w.bytes), `${name} kept bit for bit`);
    }
    const report = JSON.parse(run.stdout);
    const onDisk = (dir: string) => fs.readdirSync(dir).reduce((a, f) => a + fs.statSync(path.join(dir, f)).size, 0);
    assert.deepEqual(report.fileBytes, { before: onDisk(path.dirname(CHARCNN)), after: onDisk(out) });
    assert.ok(report.fileBytes.after < report.fileBytes.before);
    const { warnings } = await stockLoad(out);
    assert.deepEqual(warnings, []);
  });

  test('uint8 input stays uint8; --quantize chooses the new weights\' precision; the size line is printed', async () => {
    const input = await smallModel();
    quantizeUint8(input);
    const original = weightBytes(input);
    for (const [flags, dtype] of [[[], 'uint8'], [['--quantize', 'float16'], 'float16'], [['--quantize', 'none'], undefined]] as const) {
      const out = path.join(tempDir(), 'out');
      const run = await cli(compressArgs(input, out, ...flags));
      assert.equal(run.code, 0, run.stderr);
      assert.match(run.stdout, /files \(weights \+ model\.json\) [\d.]+ KiB → [\d.]+ KiB/);
      for (const [name, w] of weightBytes(path.join(out, 'model.json'))) {
        if (name.startsWith('conv2_')) assert.equal(w.spec.quantization?.dtype, dtype, `${name} ${flags.join(' ')}`);
        else {
          assert.ok(original.get(name)!.bytes.equals(w.bytes), `${name} kept bit for bit`);
          assert.deepEqual(w.spec, original.get(name)!.spec);
        }
      }
      await stockLoad(out);
    }
  });

  test('userDefinedMetadata is carried over, with lowrank\'s record beside it', async () => {
    const input = await smallModel();
    const json = JSON.parse(fs.readFileSync(input, 'utf8'));
    json.userDefinedMetadata = { labels: ['cat', 'dog', 'bird'], preprocessing: { scale: 2 } };
    fs.writeFileSync(input, JSON.stringify(json));
    const out = path.join(tempDir(), 'out');
    assert.equal((await cli(compressArgs(input, out))).code, 0);
    const saved = JSON.parse(fs.readFileSync(path.join(out, 'model.json'), 'utf8')).userDefinedMetadata;
    assert.deepEqual(saved.labels, ['cat', 'dog', 'bird']);
    assert.deepEqual(saved.preprocessing, { scale: 2 });
    assert.equal(typeof saved.lowrank.version, 'string');
  });

  test('a stray batch_input_shape is not copied onto replacement layers (no tfjs shape warning on load)', async () => {
    const input = path.join(tempDir(), 'model.json');
    fs.cpSync(path.dirname(CHARCNN), path.dirname(input), { recursive: true });
    const json = JSON.parse(fs.readFileSync(input, 'utf8'));
    json.modelTopology.config.layers[1].config.batch_input_shape = [null, 24, 24, 1]; // conv2, not the first layer
    fs.writeFileSync(input, JSON.stringify(json));
    for (const layer of ['conv2', 'conv1']) {
      const out = path.join(tempDir(), 'out');
      assert.equal((await cli(['--backend', 'wasm', 'compress', input, '--layers', layer, '--rank', '4', '--out', out, '--force'])).code, 0);
      const { warnings } = await stockLoad(out);
      assert.deepEqual(warnings.filter((w) => w.includes(`${layer}_v`)), [], layer);
    }
  });
});

describe('model files that are not regular, too large or unreadable (items 10–11)', () => {
  /**
   * `lowrank inspect` on each of `paths`, all in one fresh process (as `user` if given) with a time
   * limit: a model file that lowrank wrongly reads would block (a FIFO) or never end. One wasm
   * thread: the threaded backend's workers cannot start from an -e script. Each run's exit code and stderr.
   */
  const inspectEach = (paths: string[], user: { uid?: number; gid?: number } = {}): { code: number; stderr: string }[] => {
    const script = `
      import { main } from ${JSON.stringify(path.join(ROOT, 'dist', 'src', 'cli', 'main.js'))};
      for (const p of ${JSON.stringify(paths)}) {
        const code = await main([process.execPath, 'lowrank', '--backend', 'wasm', '--threads', '1', 'inspect', p]);
        process.stderr.write('\\n@@exit ' + code + '\\n');
      }
      process.exit(0);
    `;
    const run = spawnSync(process.execPath, ['--input-type=module', '-e', script], { cwd: ROOT, encoding: 'utf8', timeout: 60_000, ...user });
    assert.equal(run.status, 0, String(run.error ?? run.stderr));
    const parts = run.stderr.split(/^@@exit (-?\d+)$/m);
    const out = paths.map((_, i) => ({ stderr: parts[2 * i].trim(), code: Number(parts[2 * i + 1]) }));
    assert.equal(out.filter((r) => Number.isInteger(r.code)).length, paths.length, run.stderr);
    return out;
  };
  const lastLine = (text: string) => text.split('\n').pop()!;

  test('a FIFO, a device, a symlink loop and a huge model.json are refused without reading them', async () => {
    const dir = tempDir();
    const cases: [string, () => void, RegExp][] = [
      ['fifo.json', () => spawnSync('mkfifo', [path.join(dir, 'fifo.json')]), /is a FIFO, not a regular file/],
      ['zero.json', () => fs.symlinkSync('/dev/zero', path.join(dir, 'zero.json')), /is a device, not a regular file/],
      ['loop.json', () => fs.symlinkSync(path.join(dir, 'loop.json'), path.join(dir, 'loop.json')), /loop of symbolic links/],
      ['huge.json', () => fs.truncateSync((fs.writeFileSync(path.join(dir, 'huge.json'), '{'), path.join(dir, 'huge.json')), 65 * 1024 * 1024), /larger than 64 MiB/],
    ];
    for (const [, make] of cases) make();
    const runs = inspectEach(cases.map(([name]) => path.join(dir, name)));
    cases.forEach(([name, , pattern], i) => {
      assert.equal(runs[i].code, 1, `${name}: ${runs[i].stderr}`);
      assert.match(lastLine(runs[i].stderr), pattern, name);
    });
  });

  test('a shard that is not a regular file is refused', async () => {
    const input = await smallModel();
    const shard = path.join(path.dirname(input), 'group1-shard1of1.bin');
    fs.rmSync(shard);
    spawnSync('mkfifo', [shard]);
    const [run] = inspectEach([input]);
    assert.equal(run.code, 1, run.stderr);
    assert.match(run.stderr, /weight shard 'group1-shard1of1\.bin': is a FIFO, not a regular file/);
  });

  test('int32 weights and uint8 quantization without min/scale are user errors', async () => {
    for (const [edit, pattern] of [
      [(w: any) => (w.dtype = 'int32'), /weight conv1\/kernel has dtype int32/],
      [(w: any) => (w.quantization = { dtype: 'uint8' }), /uint8-quantized but lacks a numeric min and scale/],
    ] as const) {
      const input = await smallModel();
      const json = JSON.parse(fs.readFileSync(input, 'utf8'));
      edit(json.weightsManifest[0].weights[0]);
      fs.writeFileSync(input, JSON.stringify(json));
      const run = await cli(['inspect', input]);
      assert.equal(run.code, 1, run.stderr);
      assert.match(run.stderr, pattern);
    }
  });

  test('an unreadable shard or model.json is a user error naming the file', async (t) => {
    // root reads everything: run the CLI as an unprivileged user then — which needs a checkout that
    // user can read (a clone inside a private temporary folder is not).
    const asUser = process.getuid?.() === 0 ? { uid: 65534, gid: 65534 } : {};
    const probe = spawnSync(process.execPath, [path.join(ROOT, 'bin', 'lowrank.js'), '--version'], { encoding: 'utf8', ...asUser });
    if (probe.status !== 0) {
      t.skip('the checkout is not readable by an unprivileged user, and root reads every file');
      return;
    }
    const targets = ['group1-shard1of1.bin', 'model.json'];
    const inputs: string[] = [];
    for (const target of targets) {
      const input = await smallModel();
      const modelDir = path.dirname(input);
      for (const d of [modelDir, path.dirname(modelDir), path.dirname(path.dirname(modelDir))]) fs.chmodSync(d, 0o755);
      fs.chmodSync(path.join(path.dirname(input), target), 0o000);
      inputs.push(input);
    }
    const runs = inspectEach(inputs, asUser);
    targets.forEach((target, i) => {
      assert.equal(runs[i].code, 1, runs[i].stderr);
      assert.match(lastLine(runs[i].stderr), new RegExp(`${target.replace('.', '\\.')}'?: permission denied`));
    });
  });
});

describe('every file lowrank reads is checked up front; --out is checked before the work', () => {
  /** Each command line in turn in one fresh process with a time limit (a wrongly opened FIFO blocks); each run's exit code and stderr. */
  const runEach = (commands: string[][], cwd = ROOT): { code: number; stderr: string }[] => {
    const script = `
      import { main } from ${JSON.stringify(path.join(ROOT, 'dist', 'src', 'cli', 'main.js'))};
      for (const args of ${JSON.stringify(commands)}) {
        const code = await main([process.execPath, 'lowrank', '--backend', 'wasm', '--threads', '1', ...args]);
        process.stderr.write('\\n@@exit ' + code + '\\n');
      }
      process.exit(0);
    `;
    const run = spawnSync(process.execPath, ['--input-type=module', '-e', script], { cwd, encoding: 'utf8', timeout: 60_000, killSignal: 'SIGKILL' });
    assert.equal(run.status, 0, `timed out or failed: ${String(run.error ?? run.stderr)}`);
    const parts = run.stderr.split(/^@@exit (-?\d+)$/m);
    return commands.map((_, i) => ({ stderr: parts[2 * i].trim(), code: Number(parts[2 * i + 1]) }));
  };

  test('a FIFO metadata.json beside the model, or a FIFO sweep.json in --out: "not a regular file", exit 1, nothing written', async () => {
    const input = await smallModel();
    const work = path.dirname(path.dirname(input));
    spawnSync('mkfifo', [path.join(path.dirname(input), 'metadata.json')]);
    const sweepOut = path.join(work, 'sweep');
    fs.mkdirSync(sweepOut);
    spawnSync('mkfifo', [path.join(sweepOut, 'sweep.json')]);
    const images = path.join(FASHION_TRAIN, '..', 'test');
    const runs = runEach([
      ['evaluate', input, '--data', images],
      ['compress', input, '--layers', 'conv2', '--rank', '2', '--out', path.join(work, 'out')],
      ['sweep', CHARCNN, '--speedups', '2', '--data', FASHION_TRAIN, '--samples', '8', '--iterations', '0', '--out', sweepOut],
    ]);
    for (const run of runs.slice(0, 2)) {
      assert.equal(run.code, 1, run.stderr);
      assert.match(run.stderr.split('\n').pop()!, /model[/\\]metadata\.json: is a FIFO, not a regular file; /);
    }
    assert.equal(runs[2].code, 1, runs[2].stderr);
    assert.match(runs[2].stderr.split('\n').pop()!, /sweep\.json: is a FIFO, not a regular file; delete it to start the sweep over, or give another --out/);
    assert.deepEqual(fs.readdirSync(work).sort(), ['model', 'sweep']);
  });

  test('a metadata.json that is a folder is refused before any work', async () => {
    const input = await smallModel();
    const work = path.dirname(path.dirname(input));
    fs.mkdirSync(path.join(path.dirname(input), 'metadata.json'));
    const run = await cli(compressArgs(input, path.join(work, 'out')).slice(2));
    expectRefused(run, /metadata\.json: is a folder, not a regular file; /);
    assert.doesNotMatch(run.stderr, /factorizing/);
    assert.deepEqual(fs.readdirSync(work), ['model']);
  });

  test('--out . (the working folder) and --out .. (a folder holding it) are refused, even when empty', async () => {
    const empty = tempDir();
    for (const out of ['.', '..', empty]) {
      expectRefused(await cli(['compress', CHARCNN, '--rank', '4', '--out', out, '--force'], empty), out === '..' ? /--out \.\. is a folder holding the working folder/ : /is the working folder; give a new folder inside it/);
      assert.ok(fs.existsSync(empty));
      assert.deepEqual(fs.readdirSync(empty), []);
    }
  });

  test('an --out that cannot be created (/proc/x) is refused before any work', async () => {
    const run = await cli(['compress', CHARCNN, '--rank', '4', '--out', '/proc/x']);
    expectRefused(run, /--out \/proc\/x: \/proc is not writable/);
    assert.doesNotMatch(run.stderr, /factorizing/);
  });
});
