/**
 * A Teachable Machine export's metadata.json, read from beside the model: its `labels` are the
 * class names in output order, and its image models take pixels in [-1, 1] — the library computes
 * x / 127 − 1 (its utils/tf.ts `capture`), which lowrank uses as the pixel defaults.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { UserError } from '../errors.js';
import { readCappedFile } from '../model/files.js';
import type { ClassList, PixelOptions } from './images.js';

export const METADATA_FILE = 'metadata.json';
/** Largest metadata.json read: Teachable Machine's are a few hundred bytes. */
const MAX_METADATA_BYTES = 16 * 1024 * 1024;

/** Teachable Machine's pixel mapping: 0–255 → [-1, 1.008]. */
export const TEACHABLE_PIXELS: Pick<PixelOptions, 'scale' | 'offset' | 'standardize'> = { scale: 1 / 127, offset: -1, standardize: false };

export interface ModelMetadata {
  /** The file, as shown in messages. */
  file: string;
  labels: ClassList;
}

/** The metadata.json beside `modelJsonPath`, or null when there is none; a bad one is a UserError. */
export function readModelMetadata(modelJsonPath: string): ModelMetadata | null {
  const file = path.join(path.dirname(modelJsonPath), METADATA_FILE);
  if (!fs.existsSync(file)) return null;
  const shown = path.relative(process.cwd(), file) || file;
  const fix = 'fix it (a Teachable Machine export has "labels": ["class", …]) or move it away from the model';
  const text = readCappedFile(file, shown, MAX_METADATA_BYTES, `lowrank reads it as the model's Teachable Machine metadata: ${fix}`, 'a Teachable Machine metadata.json').toString('utf8');
  let json: any;
  try {
    json = JSON.parse(text);
  } catch {
    throw new UserError(`${shown}: not valid JSON; ${fix}`);
  }
  const labels = json?.labels;
  if (!Array.isArray(labels) || labels.length === 0 || !labels.every((l) => typeof l === 'string' && l.trim() !== '')) {
    throw new UserError(`${shown}: "labels" is not a list of class names; ${fix}`);
  }
  if (new Set(labels).size !== labels.length) throw new UserError(`${shown}: "labels" names a class twice; ${fix}`);
  return { file: shown, labels: { names: labels, source: shown } };
}
