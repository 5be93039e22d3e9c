// GET /metrics in Prometheus's text format, with prom-client: what the
// ingest queue and the HTTP server do, the database's size, and Node's own
// process metrics. Names follow Prometheus's conventions: a `watchtime_`
// prefix, `_total` for counters, base units (seconds, bytes).
import client from 'prom-client';
import type { Awaitable } from './store/store.ts';

/** The lookups' route templates, which the server's fast path gives without matching the path again. */
export const LOOKUP_ROUTES = {
  movie: '/movies/{slug}/watch-time',
  user: '/users/{user}/watch-time',
  pair: '/users/{user}/movies/{slug}/latest-moment',
} as const;

/** The paths the server answers, as route templates: a label with few values. */
const ROUTES: [RegExp, string][] = [
  [/^\/$/, '/'],
  [/^\/events$/, '/events'],
  [/^\/movies\/[^/]+\/watch-time$/, LOOKUP_ROUTES.movie],
  [/^\/users\/[^/]+\/watch-time$/, LOOKUP_ROUTES.user],
  [/^\/users\/[^/]+\/movies\/[^/]+\/latest-moment$/, LOOKUP_ROUTES.pair],
  [/^\/users\/[^/]+\/movies$/, '/users/{user}/movies'],
  [/^\/movies$/, '/movies'],
  [/^\/(livez|readyz|metrics)$/, ''],
];

export function routeOf(url: string): string {
  const path = url.split('?', 1)[0];
  for (const [pattern, route] of ROUTES) if (pattern.test(path)) return route || path;
  return 'other';
}

export interface MetricSources {
  queueDepth: () => number;
  /** Bytes the database takes, when the store can say. */
  databaseBytes: () => Awaitable<number | undefined>;
}

export class Metrics {
  readonly registry = new client.Registry();
  private readonly accepted: client.Counter;
  private readonly duplicates: client.Counter;
  private readonly rejected: client.Counter<'reason'>;
  private readonly batchSize: client.Histogram;
  private readonly flushSeconds: client.Histogram;
  private readonly http = new HttpSeries();

  constructor(sources: MetricSources) {
    const registers = [this.registry];
    client.collectDefaultMetrics({ register: this.registry });
    this.accepted = new client.Counter({ name: 'watchtime_events_accepted_total', help: 'Events stored and applied.', registers });
    this.duplicates = new client.Counter({
      name: 'watchtime_events_duplicate_total',
      help: 'Events acknowledged as duplicates of a stored id, and not applied again.',
      registers,
    });
    this.rejected = new client.Counter({
      name: 'watchtime_ingest_rejected_requests_total',
      help: 'Ingest requests refused, none of whose events were stored, by the problem type of the answer.',
      labelNames: ['reason'],
      registers,
    });
    this.batchSize = new client.Histogram({
      name: 'watchtime_batch_size_events',
      help: 'Events committed in one transaction.',
      buckets: [1, 4, 16, 64, 256, 1024, 4096, 16384],
      registers,
    });
    this.flushSeconds = new client.Histogram({
      name: 'watchtime_flush_duration_seconds',
      help: 'Time from the start of a batch commit until it is durable.',
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers,
    });
    new client.Gauge({
      name: 'watchtime_queue_depth_events',
      help: 'Events queued and not yet committed.',
      registers,
      collect() {
        this.set(sources.queueDepth());
      },
    });
    new client.Gauge({
      name: 'watchtime_database_size_bytes',
      help: 'Bytes the database takes (for SQLite, the file and its write-ahead log).',
      registers,
      async collect() {
        const bytes = await sources.databaseBytes();
        if (bytes !== undefined) this.set(bytes);
      },
    });
  }

  flushed(events: number, duplicates: number, seconds: number): void {
    this.accepted.inc(events - duplicates);
    this.duplicates.inc(duplicates);
    this.batchSize.observe(events);
    this.flushSeconds.observe(seconds);
  }

  refused(reason: string): void {
    this.rejected.inc({ reason });
  }

  answered(route: string, method: string, status: number, seconds: number): void {
    this.http.record(route, method, status, seconds);
  }

  /** The text of GET /metrics. */
  async text(): Promise<string> {
    return (await this.registry.metrics()) + this.http.text();
  }
}

const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 2.5];

/** One route and method: answers by status, and a latency histogram with each answer in one bucket (cumulated at scrape). */
interface Series {
  statuses: Map<number, number>;
  buckets: Float64Array;
  sum: number;
  count: number;
}

/**
 * The HTTP families, kept in plain maps and arrays rather than prom-client's
 * objects: every request adds to them, and prom-client's per-call label
 * hashing cost a quarter of a cached lookup's throughput. A request costs two
 * map lookups and no string; the text format is written when scraped.
 */
class HttpSeries {
  private readonly byRoute = new Map<string, Map<string, Series>>();

  record(route: string, method: string, status: number, seconds: number): void {
    let methods = this.byRoute.get(route);
    if (methods === undefined) this.byRoute.set(route, (methods = new Map()));
    let series = methods.get(method);
    if (series === undefined) {
      series = { statuses: new Map(), buckets: new Float64Array(LATENCY_BUCKETS.length + 1), sum: 0, count: 0 };
      methods.set(method, series);
    }
    series.statuses.set(status, (series.statuses.get(status) ?? 0) + 1);
    let bucket = 0;
    while (bucket < LATENCY_BUCKETS.length && seconds > LATENCY_BUCKETS[bucket]) bucket += 1;
    series.buckets[bucket] += 1;
    series.sum += seconds;
    series.count += 1;
  }

  text(): string {
    const counts: string[] = [];
    const latencies: string[] = [];
    for (const [route, methods] of this.byRoute) {
      for (const [method, s] of methods) {
        // routeOf gives a fixed template: nothing in a route or a method needs escaping.
        const labels = `route="${route}",method="${method}"`;
        for (const [status, n] of s.statuses) counts.push(`watchtime_http_requests_total{${labels},status="${status}"} ${n}`);
        let cumulated = 0;
        LATENCY_BUCKETS.forEach((le, i) => {
          cumulated += s.buckets[i];
          latencies.push(`watchtime_http_request_duration_seconds_bucket{${labels},le="${le}"} ${cumulated}`);
        });
        latencies.push(`watchtime_http_request_duration_seconds_bucket{${labels},le="+Inf"} ${s.count}`);
        latencies.push(`watchtime_http_request_duration_seconds_sum{${labels}} ${s.sum}`);
        latencies.push(`watchtime_http_request_duration_seconds_count{${labels}} ${s.count}`);
      }
    }
    return [
      '# HELP watchtime_http_requests_total HTTP requests answered, by route, method and status.',
      '# TYPE watchtime_http_requests_total counter',
      ...counts,
      '# HELP watchtime_http_request_duration_seconds Time from a request until its answer is written.',
      '# TYPE watchtime_http_request_duration_seconds histogram',
      ...latencies,
      '',
    ].join('\n');
  }
}
