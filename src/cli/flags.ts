/**
 * Every numeric flag of every command, with its bounds, in one table, and the one parser they all
 * go through: a blank value, a non-number, a value outside the bounds or a malformed list is a
 * one-line error naming the flag. docs/guarantees.md lists the same bounds for users.
 */
import { MAX_THREADS } from '../runtime/backend.js';
import { UserError } from '../errors.js';
import { MAX_BENCH_BATCH } from '../timing/loop.js';

interface Bounds {
  /** Whole numbers only. */
  integer: boolean;
  min: number;
  /** The lowest value is itself refused (a speedup of 1, a hold-out of 0). */
  minExclusive?: boolean;
  max: number;
  maxExclusive?: boolean;
  /** What the upper limit protects (shown when it is passed). */
  why: string;
  /** What to give instead, for values below the minimum or not numbers at all. */
  hint?: string;
}

/** Most timed (or warm-up) runs per model and batch size. */
export const MAX_RUNS = 10000;
/** Seeds drive 32-bit generators: a larger one would silently wrap around. */
export const MAX_SEED = 2 ** 32 - 1;

const wholeBatch = { integer: true, min: 1, max: MAX_BENCH_BATCH, why: 'larger batches time nothing new' };

/** The bounds of each numeric flag (a flag listed once serves every command that takes it). */
export const FLAG_BOUNDS = {
  '--threads': { integer: true, min: 1, max: MAX_THREADS, why: 'more threads than that only wait for each other' },
  '--samples': { integer: true, min: 2, max: 1_000_000, why: 'the fit keeps its images decoded in memory' },
  '--iterations': { integer: true, min: 0, max: 100_000, why: 'the fit settles within a few thousand steps' },
  '--batch': { integer: true, min: 1, max: 4096, why: 'larger minibatches fit no better and may not fit in memory' },
  '--seed': { integer: true, min: 0, max: MAX_SEED, why: 'seeds are 32-bit; larger ones would wrap around to the same fits' },
  '--holdout': { integer: false, min: 0, minExclusive: true, max: 1, maxExclusive: true, why: '', hint: 'give a fraction between 0 and 1 (e.g. 0.2)' },
  '--epochs': { integer: true, min: 1, max: 1000, why: 'fine-tuning settles within tens of epochs; use auto to stop when it does' },
  '--label-weight': {
    integer: false, min: 0, max: 10, why: 'past it the labels drown the original\'s outputs',
    hint: 'give a number from 0 (distillation only) to 10',
  },
  '--runs': { integer: true, min: 1, max: MAX_RUNS, why: 'the median settles long before' },
  '--warmup': { integer: true, min: 0, max: MAX_RUNS, why: 'a backend warms up in a few runs' },
  '--timing-batch': wholeBatch,
  '--timing': { integer: true, min: 1, max: 256, why: 'larger batches time nothing new' },
  '--bench-batch': wholeBatch,
  '--eval-batch': { integer: true, min: 1, max: 4096, why: 'larger batches predict no faster and may not fit in memory' },
  '--probes': { integer: true, min: 1, max: 12, why: 'each halves the range left, and each is a whole fit' },
  '--max-loss': {
    integer: false, min: 0, max: 100, why: 'accuracy has 100 points to lose',
    hint: 'give the points of top-1 accuracy (or of agreement with the original) you accept to lose, a number ≥ 0 (e.g. 0.5)',
  },
  '--speedup': {
    integer: false, min: 1, minExclusive: true, max: 10000, why: 'no layer selection saves that much',
    hint: 'give a number above 1 (e.g. 4 for a model needing a quarter of the MACs)',
  },
} satisfies Record<string, Bounds>;

export type NumericFlag = keyof typeof FLAG_BOUNDS;

/**
 * `value` of `flag` as a number within the flag's bounds. `shown` is the flag's name in messages
 * when one bound serves several flags (bench's and evaluate's --batch, sweep's --speedups).
 */
export function parseFlag(flag: NumericFlag, value: string, shown: string = flag): number {
  const b: Bounds = FLAG_BOUNDS[flag];
  const text = value.trim();
  const n = text === '' ? NaN : Number(text);
  const wanted = b.hint ?? (b.integer ? `give a whole number ≥ ${b.min}` : `give a number ≥ ${b.min}`);
  if (!Number.isFinite(n) || (b.integer && !Number.isInteger(n))) throw new UserError(`${shown} ${value.trim() === '' ? `'${value}'` : value}: ${wanted}`);
  if (n < b.min || (b.minExclusive && n === b.min)) throw new UserError(`${shown} ${value}: ${wanted}`);
  if (b.maxExclusive ? n >= b.max : n > b.max) throw new UserError(`${shown} ${value}: ${b.hint && b.maxExclusive ? b.hint : `at most ${b.max} (${b.why})`}`);
  return n;
}

/** A numeric flag that also takes `auto`. */
export function parseFlagOrAuto(flag: NumericFlag, value: string): number | 'auto' {
  return value.trim() === 'auto' ? 'auto' : parseFlag(flag, value);
}

/**
 * A comma-separated list of numbers of `flag` (bench --batch, sweep --speedups): every item
 * parsed alone, and no empty item or repeated value, which would otherwise be dropped silently.
 */
export function parseFlagList(flag: NumericFlag, value: string, shown: string = flag): number[] {
  const items = value.split(',').map((s) => s.trim());
  if (items.some((s) => s === '')) {
    throw new UserError(`${shown} ${value === '' ? "''" : value}: an empty item in the list; give comma-separated numbers (e.g. ${shown === '--speedups' ? '2,4,8' : '1,32'})`);
  }
  const numbers = items.map((s) => parseFlag(flag, s, shown));
  const twice = numbers.find((n, i) => numbers.indexOf(n) !== i);
  if (twice !== undefined) throw new UserError(`${shown} ${value}: ${twice} is given twice; give each value once`);
  return numbers;
}

/** A number, or a fraction a/b of two numbers (as the help writes 1/255). */
export function numberFlag(value: string, flag: string): number {
  const numbers = value.split('/').map((p) => (p.trim() === '' ? NaN : Number(p)));
  const n = numbers.length === 1 ? numbers[0] : numbers.length === 2 ? numbers[0] / numbers[1] : NaN;
  if (!Number.isFinite(n)) throw new UserError(`${flag} ${value}: give a number or a fraction (e.g. 1/255)`);
  return n;
}
