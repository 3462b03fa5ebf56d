/**
 * The `lowrank` process itself: it runs the command in a child Node process and stays idle, so
 * Ctrl-C and SIGTERM are always heard, whatever the child is busy with (a long wasm kernel, a
 * blocking read). On a signal it forwards it, gives the child a moment to clean up by itself,
 * then kills it, removes the half-written output the child announced, and exits 130 / 143.
 *
 * Imports nothing heavy: it must start and answer at once.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import { SIGNAL_EXIT_CODES, SUPERVISED_ENV, showCursor, type SupervisorMessage } from '../runtime/interrupt.js';

/** How long a signalled child may take to clean up and exit by itself before it is killed. */
export const GRACE_MS = 1500;

/** Runs `script` (bin/lowrank.js) with `args` in a child process; resolves to the exit code to use. */
export function supervise(script: string, args: string[]): Promise<number> {
  const child = spawn(process.execPath, [...process.execArgv, script, ...args], {
    stdio: ['inherit', 'inherit', 'inherit', 'ipc'],
    env: { ...process.env, [SUPERVISED_ENV]: '1' },
  });
  const partial = new Set<string>();
  child.on('message', (message: SupervisorMessage) => {
    if (message?.lowrank === 'partial') partial.add(message.path);
    else if (message?.lowrank === 'released') partial.delete(message.path);
  });

  let received: keyof typeof SIGNAL_EXIT_CODES | null = null;
  let killTimer: NodeJS.Timeout | undefined;
  const onSignal = (signal: keyof typeof SIGNAL_EXIT_CODES) => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    if (received) {
      child.kill('SIGKILL'); // asked twice: no more waiting
      return;
    }
    received = signal;
    child.kill(signal);
    killTimer = setTimeout(() => child.kill('SIGKILL'), GRACE_MS);
  };
  const handlers = (Object.keys(SIGNAL_EXIT_CODES) as (keyof typeof SIGNAL_EXIT_CODES)[]).map((signal) => {
    const handler = () => onSignal(signal);
    process.on(signal, handler);
    return [signal, handler] as const;
  });

  return new Promise((resolve) => {
    const finish = (code: number | null, signal: NodeJS.Signals | null, spawnError?: Error) => {
      clearTimeout(killTimer);
      for (const [s, handler] of handlers) process.removeListener(s, handler);
      // What the child could not remove itself (it was killed, or died).
      for (const p of partial) fs.rmSync(p, { recursive: true, force: true });
      if (spawnError) {
        process.stderr.write(`lowrank: cannot start Node.js (${spawnError.message})\n`);
        resolve(2);
      } else if (received) {
        showCursor();
        process.stderr.write(`lowrank: interrupted (${received})\n`);
        resolve(SIGNAL_EXIT_CODES[received]);
      } else if (signal) {
        // Killed from outside the process group, or by the system (out of memory).
        showCursor();
        process.stderr.write(`lowrank: the run was ended by ${signal}${signal === 'SIGKILL' ? ' (out of memory?)' : ''}; no half-written output was left\n`);
        resolve(128 + (os.constants.signals[signal] ?? 9));
      } else {
        resolve(code ?? 2);
      }
    };
    child.once('error', (err) => finish(null, null, err));
    child.once('exit', (code, signal) => finish(code, signal));
  });
}
