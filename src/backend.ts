import * as tf from '@tensorflow/tfjs';

import { UserError } from './errors.js';

export type BackendChoice = 'auto' | 'node' | 'wasm' | 'cpu';
export const BACKEND_CHOICES: BackendChoice[] = ['auto', 'node', 'wasm', 'cpu'];

/**
 * Activates a tfjs backend and returns its name as tfjs reports it ('tensorflow', 'wasm' or 'cpu').
 * tfjs-node is an optional dependency: its install downloads libtensorflow, which fails on machines
 * without that host, so it is only ever imported dynamically and 'auto' falls back to wasm.
 */
export async function useBackend(choice: BackendChoice): Promise<string> {
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
    if (await tryWasm()) return tf.getBackend();
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

async function tryWasm(): Promise<boolean> {
  try {
    await import('@tensorflow/tfjs-backend-wasm');
    return await tf.setBackend('wasm');
  } catch {
    return false;
  }
}
