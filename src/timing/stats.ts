/**
 * The statistics of bench's timings: quantiles, a distribution-free 95 % interval of the median, and
 * speedups read from paired before/after runs with their verdict.
 */

export interface TimingStats {
  medianMs: number;
  p10Ms: number;
  p90Ms: number;
  imagesPerSec: number;
}

export type Verdict = 'faster' | 'slower' | 'within noise';

/** A speedup read from paired runs: before/after time of the same run pair. */
export interface Ratio {
  /** Median of the paired per-run ratios before/after. */
  speedup: number;
  /** 95 % interval of that median. */
  speedupLow: number;
  speedupHigh: number;
  /** 'within noise' when the interval reaches within NOISE_MARGIN of 1×. */
  verdict: Verdict;
  /** True when the interval is too wide to read (high/low above WIDE_INTERVAL). */
  wide: boolean;
}

/**
 * Speedups whose interval comes this close to 1× are not reported as a difference: two copies of
 * one model can differ by a percent or two (memory placement), which many runs would call real.
 */
export const NOISE_MARGIN = 0.03;
/** An interval whose high/low exceeds this is too wide to read. */
export const WIDE_INTERVAL = 1.25;

/** The q-quantile of `values`, linear between neighbours. */
export function quantile(values: number[], q: number): number {
  const s = [...values].sort((a, b) => a - b);
  const pos = (s.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return s[lo] + (s[hi] - s[lo]) * (pos - lo);
}

/**
 * Distribution-free 95 % interval of the median: the k-th smallest and k-th largest values, k the
 * largest with P(Binomial(n, ½) < k) ≤ 2.5 %. Below 6 values no k qualifies: min–max (lower coverage).
 */
export function medianInterval(values: number[]): [number, number] {
  const s = [...values].sort((a, b) => a - b);
  const n = s.length;
  let k = 1;
  let logP = -n * Math.LN2; // log P(X = 0)
  let below = Math.exp(logP); // P(X ≤ k − 1)
  while (k < n / 2) {
    logP += Math.log((n - k + 1) / k);
    if (below + Math.exp(logP) > 0.025) break;
    below += Math.exp(logP);
    k++;
  }
  return [s[k - 1], s[n - k]];
}

/** Speedup, interval and verdict from paired before/after times. */
export function pairedRatio(before: number[], after: number[]): Ratio {
  const ratios = before.map((v, i) => v / after[i]);
  const [low, high] = medianInterval(ratios);
  const speedup = quantile(ratios, 0.5);
  const verdict: Verdict = low <= 1 + NOISE_MARGIN && high >= 1 / (1 + NOISE_MARGIN) ? 'within noise' : speedup < 1 ? 'slower' : 'faster';
  return { speedup, speedupLow: low, speedupHigh: high, verdict, wide: high / low > WIDE_INTERVAL };
}

/** Median, 10th and 90th percentile of a model's times at `batch`, and its throughput. */
export function timingStats(times: number[], batch: number): TimingStats {
  const median = quantile(times, 0.5);
  return { medianMs: median, p10Ms: quantile(times, 0.1), p90Ms: quantile(times, 0.9), imagesPerSec: (batch * 1000) / median };
}

/** Σ of the values. */
export const sum = (values: number[]) => values.reduce((s, v) => s + v, 0);
