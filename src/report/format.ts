/** Text tables and number formats shared by every command's human-readable output. */
import chalk from 'chalk';

/** 31_850_496 → "31.85M". */
export function formatCount(n: number | null): string {
  if (n === null) return '?';
  const abs = Math.abs(n);
  if (abs >= 1e9) return `${(n / 1e9).toFixed(2)}G`;
  if (abs >= 1e6) return `${(n / 1e6).toFixed(2)}M`;
  if (abs >= 1e4) return `${(n / 1e3).toFixed(1)}k`;
  return String(n);
}

export function formatPercent(fraction: number | null, digits = 1): string {
  return fraction === null ? '?' : `${(fraction * 100).toFixed(digits)}%`;
}

export function formatRatio(x: number): string {
  return `${x.toFixed(2)}×`;
}

export function formatMs(x: number): string {
  return `${x.toFixed(2)} ms`;
}

export function formatBytes(n: number): string {
  if (n >= 1024 * 1024) return `${(n / (1024 * 1024)).toFixed(2)} MiB`;
  if (n >= 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${n} B`;
}

/** Visible width, ignoring ANSI colour codes. */
const visible = (s: string): number => s.replace(/\x1b\[[0-9;]*m/g, '').length;

export interface Column {
  header: string;
  align?: 'left' | 'right';
}

/** A plain aligned table; cells may carry chalk colours. */
export function renderTable(columns: Column[], rows: string[][], footer: string[][] = []): string {
  const all = [columns.map((c) => c.header), ...rows, ...footer];
  const widths = columns.map((_, i) => Math.max(...all.map((r) => visible(r[i] ?? ''))));
  const line = (cells: string[]) =>
    cells
      .map((cell, i) => {
        const pad = ' '.repeat(widths[i] - visible(cell ?? ''));
        return columns[i].align === 'right' ? pad + cell : cell + pad;
      })
      .join('  ')
      .trimEnd();
  const rule = chalk.dim(widths.map((w) => '─'.repeat(w)).join('  '));
  const out = [chalk.bold(line(columns.map((c) => c.header))), rule, ...rows.map(line)];
  if (footer.length) out.push(rule, ...footer.map(line));
  return out.join('\n');
}
