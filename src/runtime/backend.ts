import * as tf from '@tensorflow/tfjs';
import os from 'node:os';

import { UserError } from '../errors.js';
import { THREADED_WASM_VERSION, initWasmThreaded } from './wasm-threads.js';

export type BackendChoice = 'auto' | 'node' | 'wasm' | 'cpu';
export const BACKEND_CHOICES: BackendChoice[] = ['auto', 'node', 'wasm', 'cpu'];

/** Threads a backend may use unless told otherwise: one per core. */
export const DEFAULT_THREADS = os.availableParallelism();
export const MAX_THREADS = 64;

/** Threads the wasm backend runs on (1 before it has started or on other backends). */
let wasmThreads = 1;

/**
 * Activates a tfjs backend and returns its name as tfjs reports it ('tensorflow', 'wasm' or 'cpu').
 * tfjs-node is an optional dependency: its install downloads libtensorflow, which fails on machines
 * without that host, so it is only ever imported dynamically and 'auto' falls back to wasm.
 * `threads` applies to wasm (tfjs-node manages its own threads; cpu has none).
 */
export async function useBackend(choice: BackendChoice, threads = 1): Promise<string> {
  // Production mode: no debug checks, and no "install tfjs-node" banner when the cpu backend
  // builds models (see model/io.ts).
  tf.enableProdMode();
  if (!BACKEND_CHOICES.includes(choice)) {
    throw new UserError(`unknown backend '${choice}': use one of ${BACKEND_CHOICES.join(', ')}`);
  }
  if (choice === 'auto' || choice === 'node') {
    if (await tryNode()) return tf.getBackend();
    if (choice === 'node') {
      throw new UserError(
        "backend 'node' needs @tensorflow/tfjs-node, which is not installed (its install downloads libtensorflow); use --backend wasm",
      );
    }
  }
  if (choice === 'auto' || choice === 'wasm') {
    if (await tryWasm(threads)) return tf.getBackend();
    if (choice === 'wasm') throw new UserError("backend 'wasm' failed to initialise; use --backend cpu");
  }
  await tf.setBackend('cpu');
  await tf.ready();
  return tf.getBackend();
}

async function tryNode(): Promise<boolean> {
  try {
    const moduleName = '@tensorflow/tfjs-node';
    await import(moduleName);
    return await tf.setBackend('tensorflow');
  } catch {
    return false;
  }
}

async function tryWasm(threads: number): Promise<boolean> {
  try {
    const wasm = await import('@tensorflow/tfjs-backend-wasm');
    // One thread: the single-threaded build, as tfjs picks under Node by itself.
    const threaded = threads > 1 && wasm.version_wasm === THREADED_WASM_VERSION;
    const ok = threaded ? await initWasmThreaded(threads, wasm.setThreadsCount, () => tf.setBackend('wasm')) : await tf.setBackend('wasm');
    if (ok) wasmThreads = wasm.getThreadsCount();
    return ok;
  } catch {
    return false;
  }
}

/** Threads the active backend computes on, when lowrank controls them (wasm), else null. */
export function backendThreads(): number | null {
  return tf.getBackend() === 'wasm' ? wasmThreads : null;
}
