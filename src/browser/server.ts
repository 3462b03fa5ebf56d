/**
 * The loopback web server a browser bench loads everything from: the page, the stock tfjs bundles
 * from this project's node_modules, and two model folders. It answers only an explicit list of
 * files (model.json and its weight shards, the bundles and their .wasm files); every other path,
 * a path traversal included, gets 404. It binds 127.0.0.1 on a free port and lives as long as the
 * command. Hand-written on node:http rather than a static-folder library: those serve whole
 * folders, and the point here is to serve nothing but this list.
 */
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import type { ModelFiles } from '../model/files.js';

/** Where the page finds the tfjs bundles and the wasm backend's binaries. */
export const LIB_PREFIX = '/lib/';

/** Stock bundles served to the page: package, file in its dist folder. */
const BUNDLES: [string, string][] = [
  ['@tensorflow/tfjs', 'tf.min.js'],
  ['@tensorflow/tfjs-backend-wasm', 'tf-backend-wasm.min.js'],
  ['@tensorflow/tfjs-backend-wasm', 'tfjs-backend-wasm.wasm'],
  ['@tensorflow/tfjs-backend-wasm', 'tfjs-backend-wasm-simd.wasm'],
  ['@tensorflow/tfjs-backend-wasm', 'tfjs-backend-wasm-threaded-simd.wasm'],
  ['@tensorflow/tfjs-backend-webgpu', 'tf-backend-webgpu.min.js'],
];

/** The script files the page loads, in order. */
export const PAGE_SCRIPTS = BUNDLES.map(([, file]) => file).filter((f) => f.endsWith('.js'));

const TYPES: Record<string, string> = {
  '.js': 'text/javascript; charset=utf-8',
  '.wasm': 'application/wasm',
  '.json': 'application/json',
  '.html': 'text/html; charset=utf-8',
};

export interface StaticServer {
  /** http://127.0.0.1:<port> */
  origin: string;
  /** URL of each model's model.json, by the name it was given. */
  modelUrls: Record<string, string>;
  close(): Promise<void>;
}

/** A file of `dir` of a package in this project's node_modules. */
function packageFile(pkg: string, file: string): string {
  const require = createRequire(import.meta.url);
  return path.join(path.dirname(require.resolve(`${pkg}/package.json`)), 'dist', file);
}

/**
 * Starts the server. `page` is the HTML served at "/"; `models` maps a name (a URL segment) to
 * the model whose model.json and shards are served under /models/<name>/.
 */
export async function startServer(page: string, models: Record<string, Pick<ModelFiles, 'jsonPath' | 'shards'>>): Promise<StaticServer> {
  const files = new Map<string, string | { text: string; type: string }>();
  files.set('/', { text: page, type: TYPES['.html'] });
  for (const [pkg, file] of BUNDLES) files.set(LIB_PREFIX + file, packageFile(pkg, file));
  const modelUrls: Record<string, string> = {};
  for (const [name, m] of Object.entries(models)) {
    const dir = path.dirname(m.jsonPath);
    const prefix = `/models/${encodeURIComponent(name)}/`;
    files.set(`${prefix}model.json`, m.jsonPath);
    // Shards were checked to sit inside the model's folder when the model was read.
    for (const shard of m.shards) files.set(prefix + path.relative(dir, shard.path).split(path.sep).join('/'), shard.path);
    modelUrls[name] = `${prefix}model.json`;
  }

  const server = http.createServer((req, res) => {
    const notFound = () => res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
    // The raw path, never normalized (/models/a/../../x must not reach /x), must name a listed file exactly.
    let key: string;
    try {
      key = decodeURIComponent((req.url ?? '').split('?')[0]);
    } catch {
      return notFound();
    }
    const entry = files.get(key);
    if (!entry || (req.method !== 'GET' && req.method !== 'HEAD')) return notFound();
    const headers = { 'cache-control': 'no-store' };
    if (typeof entry !== 'string') {
      res.writeHead(200, { ...headers, 'content-type': entry.type }).end(req.method === 'HEAD' ? undefined : entry.text);
      return;
    }
    fs.stat(entry, (err, stat) => {
      if (err || !stat.isFile()) return notFound();
      res.writeHead(200, { ...headers, 'content-type': TYPES[path.extname(entry)] ?? 'application/octet-stream', 'content-length': stat.size });
      if (req.method === 'HEAD') return res.end();
      fs.createReadStream(entry).on('error', () => res.destroy()).pipe(res);
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  const origin = `http://127.0.0.1:${port}`;
  return {
    origin,
    modelUrls: Object.fromEntries(Object.entries(modelUrls).map(([k, v]) => [k, origin + v])),
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}
