/**
 * Ctrl-C and `kill`: run the registered clean-ups (removing half-written output), show the
 * terminal cursor again (progress bars hide it), and exit with the shell's 128 + signal code.
 */
const cleanups = new Set<() => void>();

/** Registers a synchronous clean-up for an interrupt; returns its removal. */
export function onInterrupt(cleanup: () => void): () => void {
  cleanups.add(cleanup);
  return () => cleanups.delete(cleanup);
}

export function exitCleanlyOnSignals(): void {
  for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143]] as const) {
    process.once(signal, () => {
      for (const cleanup of cleanups) {
        try {
          cleanup();
        } catch {
          // Keep going: the other clean-ups still matter.
        }
      }
      // Progress bars are drawn only on a terminal, and hide its cursor while they run.
      if (process.stderr.isTTY) process.stderr.write('\x1b[?25h\n');
      process.stderr.write(`lowrank: interrupted (${signal})\n`);
      process.exit(code);
    });
  }
}
