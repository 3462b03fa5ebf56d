/**
 * Ctrl-C and `kill`, inside the process that does the work: run the registered clean-ups
 * (removing half-written output), show the terminal cursor again (progress bars hide it), and
 * exit with the shell's 128 + signal code.
 *
 * A handler here runs only when the event loop is free, which a busy wasm kernel or a blocking
 * read may delay for minutes. So `lowrank` runs the work in a child process under a supervisor
 * (cli/supervisor.ts) that is always idle: it forwards the signal, waits a moment for these
 * handlers, then kills the child and removes what the child announced as half-written.
 */
import * as fs from 'node:fs';

/** Set in the child process the supervisor starts; it then leaves the last word to the supervisor. */
export const SUPERVISED_ENV = 'LOWRANK_SUPERVISED';

/** Messages from the child to its supervisor over the IPC channel. */
export type SupervisorMessage = { lowrank: 'partial'; path: string } | { lowrank: 'released'; path: string };

const cleanups = new Set<() => void>();

const supervised = (): boolean => process.env[SUPERVISED_ENV] === '1' && typeof process.send === 'function';

function tellSupervisor(message: SupervisorMessage): void {
  if (!supervised() || !process.connected) return;
  try {
    process.send!(message);
  } catch {
    // The supervisor is gone: this process is being ended anyway.
  }
}

/** Registers a synchronous clean-up for an interrupt; returns its removal. */
export function onInterrupt(cleanup: () => void): () => void {
  cleanups.add(cleanup);
  return () => cleanups.delete(cleanup);
}

/**
 * Removes `target` (a folder or file being written) if the run is interrupted, here or, when
 * this process is killed before its handlers can run, by the supervisor. Returns its release.
 */
export function removeOnInterrupt(target: string): () => void {
  const release = onInterrupt(() => fs.rmSync(target, { recursive: true, force: true }));
  tellSupervisor({ lowrank: 'partial', path: target });
  return () => {
    release();
    tellSupervisor({ lowrank: 'released', path: target });
  };
}

function runCleanups(): void {
  for (const cleanup of cleanups) {
    try {
      cleanup();
    } catch {
      // Keep going: the other clean-ups still matter.
    }
  }
}

/** Shows the terminal cursor again: progress bars are drawn only on a terminal, and hide it while they run. */
export function showCursor(): void {
  if (process.stderr.isTTY) process.stderr.write('\x1b[?25h\n');
}

export const SIGNAL_EXIT_CODES = { SIGINT: 130, SIGTERM: 143 } as const;

export function exitCleanlyOnSignals(): void {
  for (const [signal, code] of Object.entries(SIGNAL_EXIT_CODES)) {
    process.once(signal, () => {
      runCleanups();
      // Under a supervisor the message and the cursor are its to write, once.
      if (!supervised()) {
        showCursor();
        process.stderr.write(`lowrank: interrupted (${signal})\n`);
      }
      process.exit(code);
    });
  }
  // The supervisor went away (killed outright): nobody waits for this run any more.
  if (supervised()) {
    process.once('disconnect', () => {
      runCleanups();
      process.exit(SIGNAL_EXIT_CODES.SIGTERM);
    });
  }
}

/**
 * Lets pending signal handlers run. Awaiting a settled promise does not: tfjs' wasm reads
 * resolve as microtasks, so a loop of them never returns to the event loop on its own.
 */
export function yieldToSignals(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
