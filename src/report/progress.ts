/**
 * Progress of long work: `Log` takes a line for the user (a compress step, a warning), `Reporter`
 * runs phases with counts. On stderr, a cli-progress bar per phase (with ETA) when stderr
 * is a terminal, a few plain lines otherwise (logs, CI). Never writes to stdout.
 */
import cliProgress from 'cli-progress';

/** One line for the user about the run (what is done, a warning). */
export type Log = (message: string) => void;

export interface Phase {
  update(done: number, detail?: string): void;
  finish(detail?: string): void;
}

export interface Reporter {
  /** Starts a phase of `total` units (e.g. "conv2: collecting", 800, "images"). */
  phase(label: string, total: number, unit: string): Phase;
  /** A one-off message. */
  note(message: string): void;
}

export const silentReporter: Reporter = {
  phase: () => ({ update() {}, finish() {} }),
  note() {},
};

const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

/** Bars on a TTY, plain lines (start, every quarter, end) elsewhere. */
export function stderrReporter(prefix = 'lowrank: ', tty = Boolean(process.stderr.isTTY)): Reporter {
  const write = (line: string) => process.stderr.write(`${prefix}${line}\n`);
  return {
    note: write,
    phase(label, total, unit) {
      const started = Date.now();
      if (tty) {
        const bar = new cliProgress.SingleBar(
          {
            stream: process.stderr,
            format: `${prefix}${label} [{bar}] {value}/{total} ${unit} | ETA {eta_formatted} {detail}`,
            hideCursor: true,
            clearOnComplete: true,
            etaBuffer: 20,
            fps: 5,
          },
          cliProgress.Presets.shades_classic,
        );
        bar.start(total, 0, { detail: '' });
        return {
          update: (done, detail) => bar.update(done, { detail: detail ?? '' }),
          finish: (detail) => {
            bar.update(total, { detail: '' });
            bar.stop();
            write(`${label}: ${total} ${unit} in ${seconds(Date.now() - started)}${detail ? ` (${detail})` : ''}`);
          },
        };
      }
      write(`${label}: 0/${total} ${unit}`);
      let nextQuarter = 1;
      return {
        update(done, detail) {
          if (total <= 0 || done >= total) return;
          if (done / total >= nextQuarter / 4) {
            while (done / total >= nextQuarter / 4) nextQuarter++;
            const elapsed = Date.now() - started;
            const eta = (elapsed / done) * (total - done);
            write(`${label}: ${done}/${total} ${unit}, ETA ${seconds(eta)}${detail ? ` (${detail})` : ''}`);
          }
        },
        finish(detail) {
          write(`${label}: ${total}/${total} ${unit} in ${seconds(Date.now() - started)}${detail ? ` (${detail})` : ''}`);
        },
      };
    },
  };
}
