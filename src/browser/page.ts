/**
 * What runs inside the browser page: the HTML that loads the stock tfjs bundles, and the small API
 * (`installPageApi`, sent into the page as source) that starts a backend, loads the two models with
 * tf.loadLayersModel and runs them. Node drives it one call at a time (see bench.ts); the timing
 * loop, statistics and reports stay in Node, shared with the Node bench.
 */
import type * as tfTypes from '@tensorflow/tfjs';
import type { Page } from 'playwright-core';
import { LIB_PREFIX, PAGE_SCRIPTS } from './server.js';

/** The page's global tf, as the stock bundle defines it (types only: nothing is imported at run time). */
declare const tf: typeof tfTypes;

export type ModelName = 'before' | 'after';

/** A backend started in the page, or why it could not be. */
export type BackendStart = { ok: true; detail: string } | { ok: false; reason: string };

/** One output tensor read back from the page. */
export interface PageTensor {
  shape: number[];
  values: number[];
}

/** The HTML at "/": the tfjs bundles, and where the wasm backend finds its binaries. */
export function pageHtml(): string {
  const scripts = PAGE_SCRIPTS.map((f) => `<script src="${LIB_PREFIX}${f}"></script>`).join('\n');
  return `<!doctype html>\n<meta charset="utf-8">\n<title>lowrank bench</title>\n${scripts}\n<script>tf.wasm.setWasmPaths('${LIB_PREFIX}');</script>\n`;
}

/**
 * Defines `globalThis.lowrankPage` in the page. It is sent as source text, so it must use nothing
 * from this module: only the page's globals (tf, navigator, document, performance).
 */
function installPageApi() {
  const models: Partial<Record<ModelName, tfTypes.LayersModel>> = {};
  let input: tfTypes.Tensor | null = null;
  const model = (name: ModelName) => {
    const m = models[name];
    if (!m) throw new Error(`model ${name} is not loaded`);
    return m;
  };
  const fromBase64 = (data: string, shape: number[]) => {
    const text = atob(data);
    const bytes = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
    return tf.tensor(new Float32Array(bytes.buffer), shape);
  };
  const outputs = (y: tfTypes.Tensor | tfTypes.Tensor[]) => (Array.isArray(y) ? y : [y]);
  /** What the backend runs on: wasm's SIMD and threads, the WebGL or WebGPU renderer. */
  const describe = async (backend: string): Promise<string> => {
    if (backend === 'wasm') {
      const simd = await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT');
      const threads = await tf.env().getAsync('WASM_HAS_MULTITHREAD_SUPPORT');
      return `${simd ? 'SIMD' : 'no SIMD'}, ${threads ? 'threads' : '1 thread'}`;
    }
    if (backend === 'webgl') {
      const gl = document.createElement('canvas').getContext('webgl2');
      const info = gl?.getExtension('WEBGL_debug_renderer_info');
      return gl && info ? String(gl.getParameter(info.UNMASKED_RENDERER_WEBGL)) : 'unknown renderer';
    }
    return backend;
  };
  const api = {
    async start(backend: string): Promise<BackendStart> {
      try {
        if (backend === 'webgpu' && !('gpu' in navigator)) return { ok: false, reason: 'this browser offers no WebGPU' };
        if (!(await tf.setBackend(backend))) return { ok: false, reason: `tfjs could not start ${backend} here (no ${backend === 'wasm' ? 'WebAssembly' : 'GPU adapter'})` };
        await tf.ready();
        return { ok: true, detail: await describe(backend) };
      } catch (err) {
        return { ok: false, reason: String(err instanceof Error ? err.message : err).split('\n')[0] };
      }
    },
    async load(urls: Record<ModelName, string>): Promise<void> {
      for (const name of ['before', 'after'] as const) models[name] = await tf.loadLayersModel(urls[name]);
    },
    /** The input every timed run of the next batch size predicts on. */
    setInput(data: string, shape: number[]): void {
      input?.dispose();
      input = fromBase64(data, shape);
    },
    /** The Node bench's timed call: one prediction, its data read back, in milliseconds. */
    async time(name: ModelName): Promise<number> {
      if (!input) throw new Error('no input set');
      const start = performance.now();
      const out = outputs(model(name).predict(input));
      await Promise.all(out.map((t) => t.data()));
      const ms = performance.now() - start;
      tf.dispose(out);
      return ms;
    },
    release(): void {
      input?.dispose();
      input = null;
    },
    /** Both models' outputs on one batch. */
    async predict(data: string, shape: number[]): Promise<Record<ModelName, PageTensor[]>> {
      const x = fromBase64(data, shape);
      const result: Partial<Record<ModelName, PageTensor[]>> = {};
      for (const name of ['before', 'after'] as const) {
        const out = outputs(model(name).predict(x));
        result[name] = [];
        for (const t of out) result[name]!.push({ shape: t.shape, values: Array.from(await t.data()) });
        tf.dispose(out);
      }
      x.dispose();
      return result as Record<ModelName, PageTensor[]>;
    },
  };
  (globalThis as unknown as { lowrankPage: typeof api }).lowrankPage = api;
  return api;
}

type PageApi = ReturnType<typeof installPageApi>;

/** A page whose API is installed, called from Node with typed arguments and results. */
export class PageDriver {
  private constructor(readonly page: Page) {}

  /** Opens `origin` in a new page of `page`'s context and installs the API. */
  static async open(page: Page, origin: string): Promise<PageDriver> {
    await page.goto(`${origin}/`);
    await page.evaluate(`(${installPageApi.toString()})()`);
    return new PageDriver(page);
  }

  call<K extends keyof PageApi>(name: K, ...args: Parameters<PageApi[K]>): Promise<Awaited<ReturnType<PageApi[K]>>> {
    return this.page.evaluate(
      ({ name, args }) => (globalThis as unknown as { lowrankPage: Record<string, (...a: unknown[]) => unknown> }).lowrankPage[name](...args),
      { name, args: args as unknown[] },
    ) as Promise<Awaited<ReturnType<PageApi[K]>>>;
  }
}

/** A float32 tensor's bytes as base64, the cheapest way into page.evaluate. */
export function toBase64(x: tfTypes.Tensor): string {
  const values = x.dataSync() as Float32Array;
  return Buffer.from(values.buffer, values.byteOffset, values.byteLength).toString('base64');
}
