/** Benchmark plumbing: timed CLI runs with their peak memory, and result tables. */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
/** Generated models and outputs live here (git-ignored), reused between runs. */
export const WORK = path.join(ROOT, '.bench-tmp');

export interface TimedRun {
  wallMs: number;
  maxRssMiB: number;
  /** User + system CPU time of the process (on a busy machine, closer to its idle wall time than its wall time is). */
  cpuMs: number;
  stdout: string;
  stderr: string;
  code: number;
}

/** Runs the lowrank CLI in a fresh Node process (with `hooks` loaded by --import): wall time includes Node start-up. */
export function timeCli(args: string[], hooks: string[] = []): TimedRun {
  const imports = [path.join(ROOT, 'dist', 'bench', 'rss-hook.js'), ...hooks].flatMap((h) => ['--import', h]);
  const start = performance.now();
  const r = spawnSync(process.execPath, [...imports, path.join(ROOT, 'bin', 'lowrank.js'), ...args], {
    cwd: ROOT,
    encoding: 'utf8',
    env: { ...process.env, NO_COLOR: '1' },
    maxBuffer: 256 * 1024 * 1024,
  });
  const wallMs = performance.now() - start;
  const m = /lowrank-bench maxrss-kib (\d+) cpu-us (\d+)/.exec(r.stderr);
  if (r.status !== 0) throw new Error(`lowrank ${args.join(' ')} failed:\n${r.stderr}`);
  return { wallMs, maxRssMiB: m ? Number(m[1]) / 1024 : NaN, cpuMs: m ? Number(m[2]) / 1000 : NaN, stdout: r.stdout, stderr: r.stderr, code: r.status ?? -1 };
}

export function mib(bytes: number): number {
  return bytes / (1024 * 1024);
}

export function folderBytes(dir: string): number {
  return fs.readdirSync(dir).reduce((a, f) => a + fs.statSync(path.join(dir, f)).size, 0);
}

export function heading(title: string): void {
  process.stdout.write(`\n## ${title}\n\n`);
}

export function markdownTable(headers: string[], rows: (string | number)[][]): void {
  const line = (cells: (string | number)[]) => `| ${cells.join(' | ')} |`;
  process.stdout.write(`${[line(headers), line(headers.map(() => '---')), ...rows.map(line)].join('\n')}\n`);
}
