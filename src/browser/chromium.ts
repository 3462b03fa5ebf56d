/**
 * Finding and starting the system's Chromium, headless, through playwright-core (which drives a
 * browser it is given and downloads none). The flags keep it off the network: no background
 * services, no QUIC, every host name but the loopback one unresolvable, and the pages' requests
 * to any other origin refused (see `openContext`).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { chromium, type Browser, type BrowserContext } from 'playwright-core';
import { UserError, firstLine } from '../errors.js';

/** Names Chromium and Chrome go by on PATH. */
const NAMES = ['chromium', 'chromium-browser', 'google-chrome', 'google-chrome-stable', 'chrome'];

const INSTALL_HINT = 'install it (apt-get install chromium) or give its path with --chromium <path> or CHROME_PATH';

const isExecutable = (p: string): boolean => {
  try {
    fs.accessSync(p, fs.constants.X_OK);
    return fs.statSync(p).isFile();
  } catch {
    return false;
  }
};

/** The browser to run: --chromium, else CHROME_PATH, else the first Chromium or Chrome on PATH. */
export function findChromium(flag: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  const given: [string | undefined, string][] = [[flag, '--chromium'], [env.CHROME_PATH || undefined, 'CHROME_PATH']];
  for (const [p, source] of given) {
    if (p === undefined) continue;
    if (!isExecutable(p)) throw new UserError(`${source} ${p}: no executable file there; ${INSTALL_HINT}`);
    return path.resolve(p);
  }
  for (const dir of (env.PATH ?? '').split(path.delimiter).filter(Boolean)) {
    for (const name of NAMES) if (isExecutable(path.join(dir, name))) return path.join(dir, name);
  }
  throw new UserError(`no Chromium found for --browser: ${INSTALL_HINT}`);
}

/** Chromium's switches: headless, WebGL on SwiftShader when there is no GPU, and no traffic off the machine. */
const SWITCHES = [
  '--no-sandbox', // root in containers and CI
  '--use-angle=swiftshader', '--enable-unsafe-swiftshader', // WebGL on the CPU where no GPU is found
  '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--disable-default-apps', '--disable-extensions', '--no-default-browser-check', '--metrics-recording-only',
  '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1',
];

/**
 * Starts Chromium headless. Playwright gives it a fresh temporary profile folder and removes it
 * when the browser closes.
 */
export async function launchChromium(executable: string): Promise<Browser> {
  try {
    return await chromium.launch({ executablePath: executable, headless: true, args: SWITCHES });
  } catch (err) {
    throw new UserError(`${executable}: Chromium did not start (${firstLine(err).replace(/^browserType\.launch: /, '')}); ${INSTALL_HINT}`);
  }
}

/** A browser context whose pages reach `origin` only: any request elsewhere is aborted. */
export async function openContext(browser: Browser, origin: string): Promise<BrowserContext> {
  const context = await browser.newContext({ serviceWorkers: 'block' });
  await context.route(() => true, (route) => (route.request().url().startsWith(`${origin}/`) ? route.continue() : route.abort('blockedbyclient')));
  return context;
}

/** Runs `fn` with Chromium started, and closes it however `fn` ends. */
export async function withChromium<T>(executable: string, fn: (browser: Browser) => Promise<T>): Promise<T> {
  const browser = await launchChromium(executable);
  try {
    return await fn(browser);
  } finally {
    await browser.close();
  }
}
