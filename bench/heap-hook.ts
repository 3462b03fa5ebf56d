// Loaded with `node --import` into a benchmarked CLI run: the peak RSS and wasm heap of each stage
// of a compress run, the stage read from its progress lines on stderr, reported at exit.
import * as tf from '@tensorflow/tfjs';

interface Stage {
  name: string;
  startMs: number;
  endMs: number;
  rssBytes: number;
  heapBytes: number;
}

const t0 = Date.now();
const stages: Stage[] = [];

/** The stage a progress line belongs to, or null when it does not start or continue one. */
function stageOf(line: string): string | null {
  if (/decoding images/.test(line)) return 'decode images';
  if (/choosing ranks by joint fits/.test(line)) return 'rank search';
  if (/: (collecting|solving|checking|fitting)\b/.test(line)) return 'fit';
  if (/evaluating held-out images/.test(line)) return 'held-out check';
  if (/lowrank: (writing|wrote|files)/.test(line)) return 'save';
  return null;
}

function heapBytes(): number {
  const backend = (tf.engine() as unknown as { backendInstance?: { wasm?: { HEAPU8?: Uint8Array } } }).backendInstance;
  return backend?.wasm?.HEAPU8?.buffer.byteLength ?? 0;
}

function sample(): void {
  if (stages.length === 0) stages.push({ name: 'load, probe, plan', startMs: 0, endMs: 0, rssBytes: 0, heapBytes: 0 });
  const s = stages[stages.length - 1];
  s.endMs = Date.now() - t0;
  s.rssBytes = Math.max(s.rssBytes, process.memoryUsage.rss());
  s.heapBytes = Math.max(s.heapBytes, heapBytes());
}

const write = process.stderr.write.bind(process.stderr);
process.stderr.write = ((chunk: string | Uint8Array, ...rest: unknown[]) => {
  const text = typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString();
  for (const line of text.split('\n')) {
    const name = stageOf(line);
    sample();
    if (name && stages[stages.length - 1].name !== name) stages.push({ name, startMs: Date.now() - t0, endMs: Date.now() - t0, rssBytes: 0, heapBytes: 0 });
  }
  return (write as (...a: unknown[]) => boolean)(chunk, ...rest);
}) as typeof process.stderr.write;

setInterval(sample, 250).unref();
process.on('exit', () => {
  sample();
  write(`\nlowrank-bench stages ${JSON.stringify(stages)}\n`);
});
