/** Shared test plumbing: run the CLI (in a fresh process or in this one), make temp folders, find fixtures. */
import { AsyncLocalStorage } from 'node:async_hooks';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import chalk from 'chalk';
import { main } from '../src/cli/main.js';
import type { SchemeOptions } from '../src/schemes/index.js';
import type { Phase, PhaseOptions, Reporter } from '../src/report/progress.js';

/** Repository root (tests run from dist/test). */
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const FIXTURES = path.join(ROOT, 'fixtures');
export const CHARCNN = path.join(FIXTURES, 'charcnn', 'model.json');
export const RESIDUAL = path.join(FIXTURES, 'residual', 'model.json');
export const NESTED = path.join(FIXTURES, 'nested', 'model.json');
export const FASHION_TRAIN = path.join(FIXTURES, 'fashion', 'train');
export const FASHION_TEST = path.join(FIXTURES, 'fashion', 'test');

export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs bin/lowrank.js in a fresh Node process. */
export function runCli(args: string[], cwd = ROOT): CliRun {
  const r = spawnSync(process.execPath, [path.join(ROOT, 'bin', 'lowrank.js'), ...args], {
    cwd,
    encoding: 'utf8',
    env: { ...process.env, NO_COLOR: '1', FORCE_COLOR: '0' },
    maxBuffer: 64 * 1024 * 1024,
  });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** What an in-process run has written so far; writes outside any run pass through. */
const capture = new AsyncLocalStorage<CliRun>();
for (const [stream, key] of [[process.stdout, 'stdout'], [process.stderr, 'stderr']] as const) {
  const write = stream.write.bind(stream) as (chunk: unknown, ...rest: unknown[]) => boolean;
  stream.write = ((chunk: unknown, ...rest: unknown[]): boolean => {
    const run = capture.getStore();
    if (!run) return write(chunk, ...rest);
    run[key] += typeof chunk === 'string' ? chunk : Buffer.from(chunk as Uint8Array).toString('utf8');
    const done = rest.find((r) => typeof r === 'function') as (() => void) | undefined;
    if (done) process.nextTick(done);
    return true;
  }) as typeof stream.write;
}

/**
 * Runs the CLI's `main` inside this process, on the backend the test file started (wasm, one
 * thread, unless `args` choose), from `cwd`: the same code path as bin/lowrank.js without a
 * process start that loads tfjs and wasm again. Messages and output are captured per run.
 * Runs must not overlap (they share the working folder and the backend).
 */
export async function cli(args: string[], cwd = ROOT): Promise<CliRun> {
  const run: CliRun = { code: -1, stdout: '', stderr: '' };
  const backend = [...(args.includes('--backend') ? [] : ['--backend', 'wasm']), ...(args.includes('--threads') ? [] : ['--threads', '1'])];
  const signalListeners = (['SIGINT', 'SIGTERM'] as const).map((s) => [s, process.listeners(s)] as const);
  const level = chalk.level;
  const home = process.cwd();
  chalk.level = 0;
  process.chdir(cwd);
  try {
    run.code = await capture.run(run, () => main([process.execPath, 'lowrank', ...backend, ...args]));
  } finally {
    process.chdir(home);
    chalk.level = level;
    // main installs its Ctrl-C handlers on every call; keep this process's as they were.
    for (const [signal, before] of signalListeners) {
      for (const l of process.listeners(signal)) if (!before.includes(l)) process.removeListener(signal, l);
    }
  }
  return run;
}

/** The error line of a failed run: its last stderr line (the first ones name the backend). */
export function errorLine(run: CliRun): string {
  const lines = run.stderr.trim().split('\n');
  return lines[lines.length - 1];
}

/** Every temporary folder a test made: removed when the test file's process ends, passed or failed. */
const madeFolders: string[] = [];
process.on('exit', () => {
  for (const dir of madeFolders) {
    try {
      fs.rmSync(dir, { recursive: true, force: true });
    } catch {
      // A test that took a folder's permissions away restores them; otherwise leave it.
    }
  }
});

export function tempDir(prefix = 'lowrank-test-'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  madeFolders.push(dir);
  return dir;
}

/** A new folder with the first `perClass` images of each of the first `classes` class folders of `source` (sorted by name). */
export function imageSubset(source: string, perClass: number, classes = Infinity): string {
  const dir = tempDir('lowrank-images-');
  for (const cls of fs.readdirSync(source).sort().slice(0, classes)) {
    fs.mkdirSync(path.join(dir, cls));
    for (const f of fs.readdirSync(path.join(source, cls)).sort().slice(0, perClass)) fs.copyFileSync(path.join(source, cls, f), path.join(dir, cls, f));
  }
  return dir;
}

/** Copies a model folder so a test may damage it. */
export function copyModel(jsonPath: string): string {
  const dir = tempDir();
  fs.cpSync(path.dirname(jsonPath), dir, { recursive: true });
  return path.join(dir, 'model.json');
}

/** Hash of every file in a folder, to prove an input was left untouched. */
export function folderSnapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of fs.readdirSync(dir)) {
    const p = path.join(dir, name);
    if (fs.statSync(p).isFile()) out[name] = fs.readFileSync(p).toString('base64');
  }
  return out;
}

/** Every registered scheme variant, for tests parametrized over schemes. */
export const SCHEME_VARIANTS: (SchemeOptions & { title: string })[] = [
  { title: 'scheme 2', scheme: '2', basis: 'per-channel', separable: false },
  { title: 'scheme 1 per-channel', scheme: '1', basis: 'per-channel', separable: false },
  { title: 'scheme 1 shared', scheme: '1', basis: 'shared', separable: false },
  { title: 'scheme 1 separable', scheme: '1', basis: 'per-channel', separable: true },
];

/**
 * 1×1 convs (stride 1 and 2, with and without bias) and Dense layers on a flattened and a sequence
 * input, every one named p_* (`linear`: no activations, so outputs are linear responses + bias).
 */
export function pointwiseModel(linear = false): tf.LayersModel {
  const init = (seed: number) => ({ kernelInitializer: tf.initializers.glorotNormal({ seed }), biasInitializer: tf.initializers.randomNormal({ seed: seed + 1 }) });
  const input = tf.input({ shape: [9, 7, 6] });
  const a = tf.layers.conv2d({ name: 'p_conv', filters: 10, kernelSize: 1, activation: linear ? 'linear' : 'relu', ...init(1) }).apply(input) as tf.SymbolicTensor;
  const b = tf.layers.conv2d({ name: 'p_stride', filters: 8, kernelSize: 1, strides: 2, padding: 'same', useBias: false, ...init(2) }).apply(a) as tf.SymbolicTensor;
  const flat = tf.layers.flatten().apply(b) as tf.SymbolicTensor;
  const c = tf.layers.dense({ name: 'p_dense', units: 12, activation: linear ? 'linear' : 'tanh', ...init(3) }).apply(flat) as tf.SymbolicTensor;
  const seq = tf.layers.reshape({ targetShape: [3, 4] }).apply(c) as tf.SymbolicTensor;
  const d = tf.layers.dense({ name: 'p_sequence', units: 5, ...init(4) }).apply(seq) as tf.SymbolicTensor;
  return tf.model({ inputs: input, outputs: [d, c] });
}

/**
 * A Teachable-Machine-shaped model: a Sequential wrapping a functional MobileNet-like block, then a
 * Dense head. `exported`: nested as @teachablemachine/image 0.8.5 exports it instead, pooling and
 * head in Sequentials of their own: Sequential[Sequential[functional, pooling], Sequential[Dense, Dense]].
 */
export function teachableModel(exported = false): tf.LayersModel {
  const init = (seed: number) => ({ kernelInitializer: tf.initializers.glorotNormal({ seed }), biasInitializer: tf.initializers.randomNormal({ seed: seed + 1, stddev: 0.1 }) });
  const input = tf.input({ shape: [16, 16, 3] });
  let h = tf.layers.conv2d({ name: 'stem', filters: 8, kernelSize: 3, strides: 2, padding: 'same', activation: 'relu', ...init(1) }).apply(input) as tf.SymbolicTensor;
  const expanded = tf.layers.conv2d({ name: 'expand', filters: 24, kernelSize: 1, activation: 'relu', ...init(2) }).apply(h) as tf.SymbolicTensor;
  h = tf.layers.depthwiseConv2d({ name: 'dw', kernelSize: 3, padding: 'same', depthwiseInitializer: tf.initializers.glorotNormal({ seed: 3 }) }).apply(expanded) as tf.SymbolicTensor;
  h = tf.layers.conv2d({ name: 'project', filters: 12, kernelSize: 1, useBias: false, ...init(4) }).apply(h) as tf.SymbolicTensor;
  h = tf.layers.conv2d({ name: 'last_conv', filters: 32, kernelSize: 1, activation: 'relu', ...init(5) }).apply(h) as tf.SymbolicTensor;
  const gap = tf.layers.globalAveragePooling2d({ name: 'gap' });
  // A head of its own needs its input shape: last_conv's 32 pooled channels.
  const dense = (inputShape?: number[]) => [
    tf.layers.dense({ name: 'head_dense', units: 20, activation: 'relu', ...(inputShape ? { inputShape } : {}), ...init(6) }),
    tf.layers.dense({ name: 'head_out', units: 3, activation: 'softmax', ...init(7) }),
  ];
  if (exported) {
    const truncated = tf.sequential({ name: 'truncated', layers: [tf.model({ inputs: input, outputs: h, name: 'mobilenet' }), gap] });
    return tf.sequential({ layers: [truncated, tf.sequential({ name: 'head', layers: dense([32]) })] });
  }
  const mobilenet = tf.model({ inputs: input, outputs: gap.apply(h) as tf.SymbolicTensor, name: 'mobilenet' });
  return tf.sequential({ layers: [mobilenet, ...dense()] });
}

/** A reporter that records every phase: its last count and detail, and whether it finished. */
export function recordingReporter() {
  const phases: { label: string; total: number; done: number; details: string[]; finished: boolean; options?: PhaseOptions }[] = [];
  const reporter: Reporter = {
    note() {},
    phase(label, total, _unit, options): Phase {
      const p = { label, total, done: 0, details: [] as string[], finished: false, options };
      phases.push(p);
      return {
        update(done, detail) {
          p.done = done;
          if (detail) p.details.push(detail);
        },
        finish: () => void (p.finished = true),
      };
    },
  };
  return { phases, reporter };
}
