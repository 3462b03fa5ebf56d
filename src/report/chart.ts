/**
 * Charts as data: a vega-lite spec (checkable: one datum per mark), compiled and rendered headless
 * by vega to SVG, and by sharp to PNG. The sweep's chart is Jaderberg et al.'s Fig. 4: held-out
 * accuracy against measured speedup, filter against data reconstruction.
 */
import sharp from 'sharp';
import type { TopLevelSpec } from 'vega-lite';

export const SERIES = { filter: 'filter reconstruction', data: 'data reconstruction' } as const;

/** One plotted point: a sweep point of one series. */
export interface ChartDatum {
  series: (typeof SERIES)[keyof typeof SERIES];
  /** Measured speedup (×). */
  speedup: number;
  /** Accuracy or agreement, in %. */
  value: number;
  /** The requested target: orders each series' line and labels its points. */
  target: number;
  label: string;
}

export interface SpeedChart {
  title: string;
  /** Lines under the title. */
  subtitle: string[];
  xTitle: string;
  yTitle: string;
  data: ChartDatum[];
  /** A horizontal reference line (e.g. the original model's accuracy), in %. */
  reference: { value: number; label: string } | null;
}

export function speedChartSpec(chart: SpeedChart): TopLevelSpec {
  const width = 480;
  const x = { field: 'speedup', type: 'quantitative' as const, title: chart.xTitle, scale: { zero: false, padding: 16 } };
  const y = { field: 'value', type: 'quantitative' as const, title: chart.yTitle, scale: { zero: false, padding: 16 } };
  const color = { field: 'series', type: 'nominal' as const, title: null, sort: [SERIES.filter, SERIES.data], legend: { orient: 'bottom-left' as const, labelLimit: 0 } };
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: chart.title, subtitle: chart.subtitle },
    width,
    height: 300,
    background: 'white',
    layer: [
      ...(chart.reference ? [{
        data: { values: [chart.reference] },
        layer: [
          { mark: { type: 'rule' as const, strokeDash: [4, 4], color: 'gray' }, encoding: { y: { field: 'value', type: 'quantitative' as const } } },
          {
            mark: { type: 'text' as const, align: 'left' as const, dy: 9, color: 'gray' },
            encoding: { y: { field: 'value', type: 'quantitative' as const }, x: { value: 4 }, text: { field: 'label' } },
          },
        ],
      }] : []),
      {
        data: { values: chart.data },
        encoding: { x, y, color },
        layer: [
          // In target order: measured speedups of neighbouring targets may come out in either order.
          { mark: { type: 'line' as const }, encoding: { order: { field: 'target', type: 'quantitative' as const } } },
          { mark: { type: 'point' as const, filled: true, size: 60, opacity: 1 }, encoding: { tooltip: [{ field: 'label' }] } },
          // Targets label the upper (data reconstruction) series only, so labels never sit on each other.
          { transform: [{ filter: `datum.series === '${SERIES.data}'` }], mark: { type: 'text' as const, dy: -10, fontSize: 10 }, encoding: { text: { field: 'label' } } },
        ],
      },
    ],
  };
}

/** The chart as SVG and as PNG (2× pixel density). */
export async function renderChart(spec: TopLevelSpec): Promise<{ svg: string; png: Buffer }> {
  // Loaded here, not at the top: vega takes ~0.5 s to load and only sweep draws charts.
  const [vega, vl] = await Promise.all([import('vega'), import('vega-lite')]);
  const view = new vega.View(vega.parse(vl.compile(spec).spec), { renderer: 'none' });
  const svg = await view.toSVG();
  view.finalize();
  const png = await sharp(Buffer.from(svg), { density: 144 }).png().toBuffer();
  return { svg, png };
}
