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

export interface PhaseOptions {
  /** Say nothing unless the phase is still running this many ms after it starts (for work that is usually quick). */
  quietFor?: number;
}

/** For work that takes under a second on small models: shown only once it lasts longer. */
export const USUALLY_QUICK: PhaseOptions = { quietFor: 1000 };

export interface Reporter {
  /** Starts a phase of `total` units (e.g. "conv2: collecting", 800, "images"). */
  phase(label: string, total: number, unit: string, options?: PhaseOptions): Phase;
  /** A one-off message. */
  note(message: string): void;
}

export const silentReporter: Reporter = {
  phase: () => ({ update() {}, finish() {} }),
  note() {},
};

/** Off a terminal, a phase still running says where it is at least this often (when it has news). */
const HEARTBEAT_MS = 15_000;

/** A reporter whose phases show as the detail of `outer` at `done` of its units (one fit of a search, one point of a sweep). */
export function withinPhase(outer: Phase, done: number, prefix: string): Reporter {
  return {
    phase: (label, total, unit) => ({
      update: (n) => outer.update(done, `${prefix}${label} ${n}/${total} ${unit}`),
      finish: () => {},
    }),
    note: () => {},
  };
}

const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

/**
 * Bars on a TTY, plain lines (start, every quarter, end) elsewhere. A phase with `quietFor` starts
 * showing at its first update past that time, and ends silently if it never showed.
 */
export function stderrReporter(
  prefix = 'lowrank: ', tty = Boolean(process.stderr.isTTY), out: (text: string) => void = (t) => process.stderr.write(t), now: () => number = Date.now,
): Reporter {
  const write = (line: string) => out(`${prefix}${line}\n`);
  return {
    note: write,
    phase(label, total, unit, options = {}) {
      const started = now();
      const quietFor = options.quietFor ?? 0;
      const shown = () => now() - started >= quietFor;
      if (tty) {
        let bar: cliProgress.SingleBar | null = null;
        const show = () => {
          bar = new cliProgress.SingleBar(
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
          return bar;
        };
        if (quietFor <= 0) show();
        return {
          update(done, detail) {
            if (!bar && shown()) show();
            bar?.update(done, { detail: detail ?? '' });
          },
          finish(detail) {
            if (!bar) {
              if (!shown()) return;
              show();
            }
            bar!.update(total, { detail: '' });
            bar!.stop();
            write(`${label}: ${total} ${unit} in ${seconds(now() - started)}${detail ? ` (${detail})` : ''}`);
          },
        };
      }
      let showing = quietFor <= 0;
      let lastLine = started;
      if (showing) write(`${label}: 0/${total} ${unit}`);
      let nextQuarter = 1;
      return {
        update(done, detail) {
          if (total <= 0 || done >= total) return;
          if (showing) {
            if (done / total < nextQuarter / 4 && now() - lastLine < HEARTBEAT_MS) return;
          } else if (shown()) {
            showing = true; // first line of a quiet phase: where it is now
          } else return;
          while (done / total >= nextQuarter / 4) nextQuarter++;
          lastLine = now();
          const elapsed = now() - started;
          const eta = (elapsed / Math.max(done, 1e-9)) * (total - done);
          write(`${label}: ${done}/${total} ${unit}${done > 0 ? `, ETA ${seconds(eta)}` : ''}${detail ? ` (${detail})` : ''}`);
        },
        finish(detail) {
          if (!showing && !shown()) return;
          write(`${label}: ${total}/${total} ${unit} in ${seconds(now() - started)}${detail ? ` (${detail})` : ''}`);
        },
      };
    },
  };
}
