// Plain-text output of the query command.
import type { MovieStats, RetentionCurve, TimeSeries } from '../analytics/answers.ts';

/** 7390 -> "2h 03m 10s". */
export function formatDuration(seconds: number): string {
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = seconds % 60;
  const pad = (n: number) => String(n).padStart(2, '0');
  if (h > 0) return `${h}h ${pad(m)}m ${pad(s)}s`;
  if (m > 0) return `${m}m ${pad(s)}s`;
  return `${s}s`;
}

/** Label/value lines, labels aligned. */
export function formatRecord(rows: [string, string | number][]): string {
  const width = Math.max(...rows.map(([label]) => label.length));
  return rows.map(([label, value]) => `${label.padEnd(width)}  ${value}`).join('\n');
}

/** Columns aligned under their headings; numbers, and the columns `right` names by index, right-aligned. */
export function formatTable(headings: string[], rows: (string | number)[][], right: number[] = []): string {
  const widths = headings.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i]).length)));
  const line = (cells: (string | number)[], heading = false) =>
    cells
      .map((cell, i) =>
        typeof cell === 'number' || (!heading && right.includes(i)) ? String(cell).padStart(widths[i]) : String(cell).padEnd(widths[i]))
      .join('  ')
      .trimEnd();
  return [line(headings, true), ...rows.map((row) => line(row))].join('\n');
}

export const watched = (seconds: number) => `${formatDuration(seconds)} (${seconds} s)`;

/** 0.5 -> "50.0 %". */
export const percent = (share: number) => `${(share * 100).toFixed(1)} %`;

/** How far the analytics have got (SPEC section 7: they follow ingest by about a second). */
const asOf = ({ asOf, lagEvents }: { asOf: number; lagEvents: number }) =>
  `event ${asOf}${lagEvents === 0 ? ', every stored event included' : `, ${lagEvents} stored after it not yet included`}`;

export function formatStats(m: MovieStats): string {
  // An average of seconds: to the second as a duration, to a tenth beside it.
  const average = Math.round(m.averageCoverage * 10) / 10;
  return formatRecord([
    ['movie', m.slug],
    ['duration', `${formatDuration(m.duration)} (${m.duration} s, ${m.durationSource})`],
    ['watched', watched(m.watchTime)],
    ['viewers', m.viewers],
    ['coverage', watched(m.coverage)],
    ['rewatched', watched(m.rewatched)],
    ['completed', `${m.completed} of ${m.viewers} (${percent(m.completionRate)})`],
    ['average coverage', `${formatDuration(Math.round(m.averageCoverage))} (${average} s)`],
    ['as of', asOf(m)],
  ]);
}

export function formatRetention(r: RetentionCurve): string {
  const head = formatRecord([['movie', r.slug], ['duration', `${formatDuration(r.duration)} (${r.duration} s)`], ['viewers', r.viewers], ['as of', asOf(r)]]);
  const table = formatTable(['second', 'viewers', 'share'], r.points.map((p) => [p.second, p.viewers, percent(p.share)]), [2]);
  return `${head}\n\n${table}`;
}

/** `scope`: what the series is of ("the service", "movie alien", "user ann"). */
export function formatTimeSeries(t: TimeSeries, scope: string): string {
  const head = formatRecord([
    ['series', `${scope}, by ${t.interval} (UTC)`],
    ['from', t.from],
    ['to', `${t.to} (excluded)`],
    ['as of', asOf(t)],
  ]);
  const table = formatTable(['start', 'watched (s)', 'viewers', 'events'], t.buckets.map((b) => [b.start, b.watchTime, b.viewers, b.events]));
  return `${head}\n\n${table}`;
}
