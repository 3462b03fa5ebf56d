/**
 * Starts the wasm backend's own threads under Node.
 *
 * @tensorflow/tfjs-backend-wasm ships a pthread build in which XNNPACK splits every convolution and
 * matrix product over a thread pool, but under Node it never runs, for three reasons:
 *  1. its WASM_HAS_MULTITHREAD_SUPPORT flag is hard-wired to false when IS_NODE;
 *  2. it creates each pthread's Worker from a blob: URL and sends it the module's source as a Blob,
 *     and Node's worker_threads can load neither;
 *  3. its C++ side caps the pool at half the logical cores (it assumes two hyperthreads per core):
 *     one thread on a 2-core machine.
 * `initWasmThreaded` works around all three without touching the package: it sets the flag, makes
 * the global `Worker` the Emscripten runtime uses a worker_threads Worker that reads those Blobs
 * (`PthreadWorker`), and reports twice the requested count as logical cores while the backend
 * initialises. XNNPACK splits outputs into tiles, each computed by one thread in the same order
 * whatever the thread count, so results do not depend on it.
 */
import os from 'node:os';
import { resolveObjectURL } from 'node:buffer';
import { Worker, type TransferListItem } from 'node:worker_threads';
import * as tf from '@tensorflow/tfjs';

/**
 * The backend version whose bundle this was written against: BOOTSTRAP names variables of that
 * bundle, and a worker that fails to load takes the process down. Other versions run on one thread.
 */
export const THREADED_WASM_VERSION = '4.22.0';

/**
 * The script each pthread Worker starts with (CommonJS, as Emscripten's worker script expects). Its
 * first message carries Emscripten's own worker script and the runtime's 'load' message with the
 * module factory's source; from then on that script handles every message.
 */
const BOOTSTRAP = `
const { parentPort } = require('worker_threads');
parentPort.once('message', ({ workerScript, load }) => {
  // The factory's source still refers to these variables of the bundle it was taken from.
  Object.assign(globalThis, {
    require$$0: require('fs'), require$$1: require('path'), require$$3: require('perf_hooks'),
    require$$4: require('os'), commonjsGlobal: globalThis,
  });
  (0, eval)(workerScript);
  // The worker script "imports" the factory from load.urlOrBlob, which here is its source.
  globalThis.importScripts = (source) => (0, eval)(source);
  globalThis.onmessage({ data: load });
});
`;

interface LoadMessage {
  cmd: 'load';
  urlOrBlob: Blob;
}

/** A worker_threads Worker that accepts what the wasm backend gives a browser Worker. */
class PthreadWorker extends Worker {
  /** blob: URL of Emscripten's pthread worker script. */
  readonly #scriptUrl: string;

  constructor(scriptUrl: string) {
    super(BOOTSTRAP, { eval: true });
    this.#scriptUrl = scriptUrl;
    this.unref();
  }

  /**
   * The runtime refs a worker while it runs a thread, and XNNPACK's pool threads run for good: the
   * process would never exit. They only ever work for a call of the main thread, so never ref.
   */
  override ref(): void {}

  override postMessage(message: unknown, transferList?: readonly TransferListItem[]): void {
    if ((message as LoadMessage | null)?.cmd !== 'load') {
      super.postMessage(message, transferList);
      return;
    }
    // Blobs only read asynchronously; the runtime waits for this worker's 'loaded' reply before
    // giving it work, so delaying 'load' is safe. Every other message must go out at once: the
    // main thread may block in wasm until a thread has received its 'run'.
    const load = message as LoadMessage;
    void Promise.all([resolveObjectURL(this.#scriptUrl)!.text(), load.urlOrBlob.text()]).then(([workerScript, factory]) =>
      super.postMessage({ workerScript, load: { ...load, urlOrBlob: factory } }),
    );
  }
}

/**
 * Runs `init` (which initialises the wasm backend) so that the backend gets `threads` threads
 * (XNNPACK's build caps the pool at 8). `setThreadsCount` is the backend package's own.
 */
export async function initWasmThreaded<T>(threads: number, setThreadsCount: (n: number) => void, init: () => Promise<T>): Promise<T> {
  tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', true);
  setThreadsCount(threads);
  // The runtime assigns worker_threads' Worker to the global before creating workers: keep ours.
  Object.defineProperty(globalThis, 'Worker', { configurable: true, get: () => PthreadWorker, set: () => {} });
  const cpus = os.cpus;
  // Static initialisers read the core count once, during init.
  os.cpus = () => Array.from({ length: 2 * threads }, () => cpus()[0]);
  try {
    return await init();
  } finally {
    os.cpus = cpus;
  }
}
