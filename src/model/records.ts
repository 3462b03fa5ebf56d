/**
 * The record of what replaced what, kept in a written model's userDefinedMetadata.lowrank.replaced:
 * how bench and a second lowrank run recognise replacement layers without guessing from names.
 */
import type { Factorization } from '../schemes/index.js';

/** The record of what replaced what, kept in the output's userDefinedMetadata.lowrank.replaced. */
export interface ReplacementRecord {
  layer: string;
  scheme: string;
  label: string;
  rank: number;
  layers: string[];
}

/** What replaced what, from a model.json's userDefinedMetadata (null for models written elsewhere). */
export function readReplacementRecords(metadata: any): Map<string, string[]> | null {
  const replaced = metadata?.lowrank?.replaced;
  if (!Array.isArray(replaced)) return null;
  const ok = (r: any) => r && typeof r.layer === 'string' && Array.isArray(r.layers) && r.layers.every((n: unknown) => typeof n === 'string');
  return new Map(replaced.filter(ok).map((r: ReplacementRecord) => [r.layer, r.layers]));
}

export function replacementRecords(factorizations: Factorization[]): ReplacementRecord[] {
  return factorizations.map((f) => ({
    layer: f.target.name, scheme: f.scheme.id, label: f.scheme.label, rank: f.rank, layers: f.scheme.layers(f).map((l) => l.config.name),
  }));
}

/**
 * The input's userDefinedMetadata with this run's records added under lowrank.replaced (records
 * of an earlier lowrank run on the input are kept: its replacement layers may be replaced again).
 */
export function withReplacementRecords(metadata: Record<string, any> | undefined, factorizations: Factorization[]): Record<string, any> {
  const previous = Array.isArray(metadata?.lowrank?.replaced) ? metadata!.lowrank.replaced : [];
  return { ...(metadata ?? {}), lowrank: { ...(metadata?.lowrank ?? {}), replaced: [...previous, ...replacementRecords(factorizations)] } };
}
