/**
 * The output folder: what `--out` may be, and how a finished model gets there without ever
 * losing something lowrank did not write.
 *
 * - `--out` must not be empty, a symlink, or a folder holding the input; an existing folder is
 *   replaced only with --force, and only when it is empty or a model lowrank wrote (its
 *   model.json carries lowrank's marker and the folder holds nothing but that model).
 * - A model is written into a hidden `.<out>.partial-<pid>-XXXXXX` folder beside `--out` and
 *   renamed into place. rename() fails on a non-empty target, so a model that appeared at `--out`
 *   meanwhile (another run) is never replaced: the later run fails instead. A replaced folder is
 *   first moved aside and checked to be the very folder (same inode) that was checked at the start.
 * - Ctrl-C removes the partial folder; partial folders of killed runs are swept when their
 *   writer process is gone.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { UserError, firstLine } from '../errors.js';
import { removeOnInterrupt } from '../runtime/interrupt.js';
import { readModelJson } from './files.js';

/** The key of lowrank's record in model.json's userDefinedMetadata. */
export const METADATA_KEY = 'lowrank';

/** Marker file inside a partial folder: {"pid": writer}. Removed before the folder is renamed into place. */
const PARTIAL_MARKER = '.lowrank-partial';

/** The result of checking `--out` before the work: what was there, to be found unchanged when writing. */
export interface OutputCheck {
  /** Absolute `--out`. */
  out: string;
  /** `--out` as the user gave it, for messages. */
  shown: string;
  /** Identity of the folder at `--out` (which --force will replace), or null when there was none. */
  existing: { dev: number; ino: number } | null;
}

/** True for a model.json lowrank wrote (its marker, or the convertedBy of earlier versions). */
function writtenByLowrank(json: any): boolean {
  const record = json?.userDefinedMetadata?.[METADATA_KEY];
  return (record !== null && typeof record === 'object') || json?.convertedBy === 'lowrank';
}

/** Why `dir` may not be replaced, or null when it is empty or holds only a model lowrank wrote. */
function notReplaceable(dir: string): string | null {
  const entries = fs.readdirSync(dir);
  if (entries.length === 0) return null;
  const jsonPath = path.join(dir, 'model.json');
  let json: any = null;
  if (fs.lstatSync(jsonPath, { throwIfNoEntry: false })?.isFile()) {
    try {
      json = readModelJson(jsonPath).json;
    } catch {
      // Unreadable or not JSON: not lowrank's.
    }
  }
  if (!writtenByLowrank(json)) return 'it was not written by lowrank';
  const own = new Set<string>(['model.json']);
  const companions = json.userDefinedMetadata?.[METADATA_KEY]?.files;
  for (const name of Array.isArray(companions) ? companions : []) own.add(String(name));
  for (const group of Array.isArray(json.weightsManifest) ? json.weightsManifest : []) {
    for (const p of Array.isArray(group?.paths) ? group.paths : []) own.add(String(p));
  }
  const foreign = entries.filter((e) => !own.has(e) || !fs.lstatSync(path.join(dir, e)).isFile());
  if (foreign.length) return `it holds files lowrank did not write (${foreign.slice(0, 3).join(', ')}${foreign.length > 3 ? ', …' : ''})`;
  return null;
}

/** `inner` is `outer` or lies inside it. */
function within(outer: string, inner: string): boolean {
  const rel = path.relative(outer, inner);
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
}

const realOrSelf = (p: string): string => {
  try {
    return fs.realpathSync(p);
  } catch {
    return p;
  }
};

/**
 * Fails early, before any work, if `outDir` cannot become the output; returns what is there now.
 * `input` (a model.json path, or several files) must survive: `--out` may not contain any of
 * them, through symlinks too.
 */
export function checkOutputDir(outDir: string, force: boolean, input?: string | string[]): OutputCheck {
  if (outDir.trim() === '') throw new UserError('--out is empty; give the folder to write the compressed model into');
  const out = path.resolve(outDir);
  const check: OutputCheck = { out, shown: outDir, existing: null };
  let stat: fs.Stats | undefined;
  try {
    stat = fs.lstatSync(out, { throwIfNoEntry: false });
  } catch (err: any) {
    // ENOTDIR: a file on the way; the parent check below says which.
    if (err.code !== 'ENOTDIR') throw new UserError(`--out ${outDir}: cannot use it (${firstLine(err)})`);
  }
  if (stat) {
    if (stat.isSymbolicLink()) throw new UserError(`--out ${outDir} is a symbolic link; give a folder path without links at its end`);
    if (!stat.isDirectory()) throw new UserError(`--out ${outDir} exists and is not a folder`);
    const realOut = fs.realpathSync(out);
    const inputs = input === undefined ? [] : Array.isArray(input) ? input : [input, path.dirname(input)];
    if (inputs.some((p) => within(realOut, realOrSelf(p)) || within(realOut, path.resolve(p)))) {
      throw new UserError(`--out ${outDir} holds the input model; the input is never modified: choose another folder`);
    }
    if (!force) throw new UserError(`--out ${outDir} already exists; choose a new folder or pass --force to replace it`);
    const reason = notReplaceable(out);
    if (reason) throw new UserError(`--out ${outDir}: ${reason}; --force replaces only an empty folder or a model lowrank wrote: choose another folder`);
    check.existing = { dev: stat.dev, ino: stat.ino };
  }
  let parent = path.dirname(out);
  while (!fs.existsSync(parent)) parent = path.dirname(parent);
  if (!fs.statSync(parent).isDirectory()) {
    throw new UserError(`--out ${outDir}: ${parent} is a file, not a folder`);
  }
  // Permission bits do not tell (root passes them; /proc, read-only mounts and full disks refuse
  // anyway): create and remove a folder where the output will go, before any work.
  try {
    fs.rmdirSync(fs.mkdtempSync(path.join(parent, `.${path.basename(out)}.probe-`)));
  } catch (err: any) {
    throw new UserError(`--out ${outDir}: ${parent} is not writable (${err.code ?? firstLine(err)}); choose a folder you can write to`);
  }
  return check;
}

const partialPrefix = (out: string): string => `.${path.basename(out)}.partial-`;

/** The writer pid of a partial folder name `.<out>.partial-<pid>-XXXXXX[-old]`. */
function partialWriter(name: string, out: string): number | null {
  const prefix = partialPrefix(out);
  if (!name.startsWith(prefix)) return null;
  const m = /^(\d+)-[A-Za-z0-9]{6}(-old)?$/.exec(name.slice(prefix.length));
  return m ? Number(m[1]) : null;
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err: any) {
    return err.code === 'EPERM';
  }
}

/**
 * Removes partial folders beside `out` left by killed runs: named like lowrank's, holding its
 * marker file or a model it wrote (or nothing), and whose writer process is gone. Returns what
 * it removed and what looks like lowrank's but was left (its writer still runs or it is not
 * recognisably lowrank's).
 */
export function sweepPartials(out: string): { removed: string[]; left: string[] } {
  const parent = path.dirname(out);
  const removed: string[] = [];
  const left: string[] = [];
  let names: string[];
  try {
    names = fs.readdirSync(parent);
  } catch {
    return { removed, left };
  }
  for (const name of names) {
    const pid = partialWriter(name, out);
    if (pid === null || pid === process.pid) continue;
    const dir = path.join(parent, name);
    if (!fs.lstatSync(dir).isDirectory()) continue;
    if (processAlive(pid)) continue; // a run writing the same --out right now
    const ours = fs.existsSync(path.join(dir, PARTIAL_MARKER)) || notReplaceable(dir) === null;
    if (!ours) {
      left.push(dir);
      continue;
    }
    fs.rmSync(dir, { recursive: true, force: true });
    removed.push(dir);
  }
  return { removed, left };
}

/** A hidden folder beside `out` to write into; removed on Ctrl-C and by `discard`. */
export interface PartialFolder {
  dir: string;
  /** Moves the finished folder to `--out` (see commitOutput). */
  commit(check: OutputCheck): void;
  discard(): void;
}

export function createPartial(out: string, shown: string): PartialFolder {
  const parent = path.dirname(out);
  let dir: string;
  try {
    fs.mkdirSync(parent, { recursive: true });
    dir = fs.mkdtempSync(path.join(parent, `${partialPrefix(out)}${process.pid}-`));
    fs.writeFileSync(path.join(dir, PARTIAL_MARKER), JSON.stringify({ pid: process.pid }));
  } catch (err) {
    throw new UserError(`--out ${shown}: cannot create the folder (${firstLine(err)})`);
  }
  const discard = () => fs.rmSync(dir, { recursive: true, force: true });
  const release = removeOnInterrupt(dir);
  return {
    dir,
    commit(check) {
      fs.rmSync(path.join(dir, PARTIAL_MARKER));
      fs.chmodSync(dir, 0o777 & ~process.umask()); // mkdtemp makes it private
      try {
        commitOutput(dir, check);
      } finally {
        release();
      }
    },
    discard() {
      release();
      discard();
    },
  };
}

const occupied = (err: any): boolean => ['ENOTEMPTY', 'EEXIST', 'ENOTDIR', 'EISDIR'].includes(err?.code);

/**
 * Renames the finished folder `tmp` to `--out`, atomically, failing rather than replacing
 * anything that was not at `--out` when the run was checked.
 */
function commitOutput(tmp: string, check: OutputCheck): void {
  const appeared = () => new UserError(`--out ${check.shown} appeared while lowrank was working (another run?); it was left as it is and nothing was written: run again`);
  const place = () => {
    try {
      // Fails on a non-empty folder or a file; an empty folder is replaced (nothing is lost).
      fs.renameSync(tmp, check.out);
    } catch (err) {
      if (occupied(err)) throw appeared();
      throw err;
    }
  };
  if (!check.existing) {
    place();
    return;
  }
  // --force: move the old folder aside, make sure it is the one that was checked, then swap.
  const aside = `${tmp}-old`;
  try {
    fs.renameSync(check.out, aside);
  } catch (err: any) {
    if (err.code !== 'ENOENT') throw err;
    place(); // it went away meanwhile
    return;
  }
  const putBack = (error: UserError): UserError => {
    try {
      fs.renameSync(aside, check.out);
      return error;
    } catch {
      return new UserError(`${error.message} (the earlier --out folder is kept at ${aside})`);
    }
  };
  const stat = fs.lstatSync(aside);
  if (stat.dev !== check.existing.dev || stat.ino !== check.existing.ino || !stat.isDirectory() || notReplaceable(aside) !== null) {
    throw putBack(new UserError(`--out ${check.shown} was replaced by another folder while lowrank was working (another run?); it was left as it is and nothing was written: run again`));
  }
  try {
    place();
  } catch (err) {
    throw putBack(err instanceof UserError ? err : new UserError(`--out ${check.shown}: cannot write the model (${firstLine(err)})`));
  }
  fs.rmSync(aside, { recursive: true, force: true });
}
