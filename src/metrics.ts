// GET /metrics in Prometheus's text format, with prom-client: what the
// ingest queue and the HTTP server do, the database's size, and Node's own
// process metrics. Names follow Prometheus's conventions: a `watchtime_`
// prefix, `_total` for counters, base units (seconds, bytes).
import { readFileSync } from 'node:fs';
import client from 'prom-client';
import type { Awaitable, RebuildState } from './store/store.ts';

const { version } = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };

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


/** What only the process that writes the database can say. */
export interface WriterSources {
  queueDepth: () => number;
  queueCapacity: number;
  /** Bytes the database takes, when the store can say. */
  databaseBytes: () => Awaitable<number | undefined>;
  rebuild?: () => Awaitable<RebuildState | undefined>;
  /** Batches tried again after another batch's write, a deadlock or a lost connection (PostgreSQL). */
  batchRetries?: () => number;
  /** Where the analytics follower is (SPEC section 7), read from the database. */
  analytics?: () => Awaitable<{ asOf: number; lagEvents: number }>;
  /** Events this process's follower applied, all time. */
  analyticsApplied?: () => number;
  /** The follower's rounds that failed, all time. */
  analyticsFailures?: () => number;
  /** HTTP workers running, when workers serve HTTP and this process only writes. */
  workers?: () => number;
  /** Workers that died and were started again. */
  workerRestarts?: () => number;
}

export interface MetricSources {
  /** Which process this is, as the `process` label of its own series: `server` (one process), `writer` or `worker-N`. */
  process: string;
  /** The HTTP side: requests, refusals. Absent in a writer whose workers serve HTTP. */
  http: boolean;
  /** The writer's side: flushes, the queue, the database. Absent in an HTTP worker. */
  writer?: WriterSources;
  /** Log lines dropped because the log could not be written. */
  droppedLogLines?: () => number;
}

/**
 * One process's metrics as data, for the process that answers /metrics for
 * every worker: prom-client's JSON, and the HTTP series' raw counts.
 */
export interface MetricsSnapshot {
  registry: client.MetricObjectWithValues<client.MetricValue<string>>[];
  http: HttpSeriesData;
}

/** The problem kinds an ingest request can be refused with: their series exist at 0 from the start, for alerts. */
const INGEST_REFUSALS = [
  'invalid-event', 'invalid-body', 'invalid-request', 'unauthorized', 'body-too-large', 'unsupported-media-type',
  'queue-full', 'busy-reading', 'shutting-down', 'storage-unavailable', 'internal',
];

/** Methods kept as label values; any other is `other`, so that a client cannot make new series. */
const METHODS = new Set(['GET', 'POST', 'HEAD', 'PUT', 'DELETE', 'OPTIONS', 'PATCH']);

/**
 * prom-client's gauges whose names end in _total, which promtool rejects for
 * anything but a counter; the same figures stay as nodejs_active_handles and
 * nodejs_active_requests, by type.
 */
const MISNAMED_DEFAULTS = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'];

export class Metrics {
  readonly registry = new client.Registry();
  private readonly http = new HttpSeries();
  private readonly refusals: RefusalCounters | undefined;
  private readonly writer: WriterMetrics | undefined;

  constructor(sources: MetricSources) {
    const registers = [this.registry];
    client.collectDefaultMetrics({ register: this.registry });
    for (const name of MISNAMED_DEFAULTS) this.registry.removeSingleMetric(name);
    new client.Gauge({
      name: 'watchtime_build_info',
      help: 'The running version of watchtime and of Node.js; always 1.',
      labelNames: ['version', 'node'],
      registers,
      aggregator: 'first',
    }).set({ version, node: process.version }, 1);
    new client.Counter({
      name: 'watchtime_log_lines_dropped_total',
      help: 'Log lines that could not be written (a full disk, a closed pipe) and were dropped; the server serves on.',
      registers,
      collect() {
        this.reset();
        this.inc(sources.droppedLogLines?.() ?? 0);
      },
    });
    new client.Gauge({
      name: 'watchtime_process_resident_memory_bytes',
      help: 'Resident memory of each process of the service (the writer and each HTTP worker), where process_resident_memory_bytes is their sum.',
      labelNames: ['process'],
      registers,
      collect() {
        this.set({ process: sources.process }, process.memoryUsage.rss());
      },
    });
    if (sources.http) this.refusals = new RefusalCounters(registers);
    if (sources.writer) this.writer = new WriterMetrics(sources.writer, registers);
  }

  flushed(events: number, duplicates: number, seconds: number, syncSeconds: number): void {
    this.writer?.flushed(events, duplicates, seconds, syncSeconds);
  }

  flushFailed(): void {
    this.writer?.flushFailures.inc();
  }

  /** An ingest request refused, with its events when the body was read. */
  refused(reason: string, events = 0): void {
    this.refusals?.refused(reason, events);
  }

  answered(route: string, method: string, status: number, seconds: number): void {
    this.http.record(route, method, status, seconds);
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** The text of GET /metrics. */
  async text(): Promise<string> {
    await this.writer?.readRebuild();
    return (await this.registry.metrics()) + this.http.text();
  }

  async snapshot(): Promise<MetricsSnapshot> {
    await this.writer?.readRebuild();
    return { registry: await this.registry.getMetricsAsJSON(), http: this.http.data() };
  }

  /**
   * The text of GET /metrics for a service of several processes: counters
   * and histograms summed, so that it reads as one server's (the process
   * metrics too: CPU seconds and resident memory are the whole service's).
   */
  static async combined(snapshots: MetricsSnapshot[]): Promise<string> {
    const { registry, http } = merge(snapshots);
    return (await registry.metrics()) + http.text();
  }

  /**
   * What stays of a process that is gone, added to every scrape after it so
   * that no counter goes back: its counters and histograms, not its gauges.
   */
  static async lasting(snapshots: MetricsSnapshot[]): Promise<MetricsSnapshot> {
    // prom-client's JSON says the type as a word, where its typings say an enum.
    const lasts = (type: unknown) => type === 'counter' || type === 'histogram';
    const kept = snapshots.map((s) => ({ ...s, registry: s.registry.filter((m) => lasts(m.type)) }));
    const { registry, http } = merge(kept);
    return { registry: await registry.getMetricsAsJSON(), http: http.data() };
  }
}

/** A counter that another part keeps: read at each scrape. */
function countedAtScrape(name: string, help: string, read: () => number, registers: client.Registry[]): void {
  new client.Counter({
    name,
    help,
    registers,
    collect() {
      this.reset();
      this.inc(read());
    },
  });
}

/**
 * How a process metric of several processes reads as the service's, where a
 * sum would mislead: its start is the first process's, its file limit each
 * one's, and its event loop's lag the worst one's (an average hides a stuck worker).
 */
function aggregatorOf(name: string): client.Aggregator | undefined {
  if (name === 'process_start_time_seconds' || name === 'process_max_fds') return 'min';
  if (name.startsWith('nodejs_eventloop_lag')) return 'max';
  return undefined;
}

function merge(snapshots: MetricsSnapshot[]): { registry: ReturnType<typeof client.AggregatorRegistry.aggregate>; http: HttpSeries } {
  const registry = client.AggregatorRegistry.aggregate(
    snapshots.map((s) => s.registry.map((m) => ({ ...m, aggregator: aggregatorOf(m.name) ?? m.aggregator }))),
  );
  const http = new HttpSeries();
  for (const s of snapshots) http.add(s.http);
  return { registry, http };
}

/** The ingest refusals, by the problem type of the answer: counted where requests are answered. */
class RefusalCounters {
  private readonly rejected: client.Counter<'reason'>;
  private readonly rejectedEvents: client.Counter<'reason'>;

  constructor(registers: client.Registry[]) {
    this.rejected = new client.Counter({
      name: 'watchtime_ingest_rejected_requests_total',
      help: 'Ingest requests refused, none of whose events were stored, by the problem type of the answer.',
      labelNames: ['reason'],
      registers,
    });
    this.rejectedEvents = new client.Counter({
      name: 'watchtime_ingest_rejected_events_total',
      help: 'Events in refused ingest requests, by the problem type of the answer (a refused body that was never read counts none).',
      labelNames: ['reason'],
      registers,
    });
    for (const reason of INGEST_REFUSALS) {
      this.rejected.inc({ reason }, 0);
      this.rejectedEvents.inc({ reason }, 0);
    }
  }

  refused(reason: string, events: number): void {
    this.rejected.inc({ reason });
    if (events > 0) this.rejectedEvents.inc({ reason }, events);
  }
}

/** What the writer does: commits, the queue, the database, a rebuild's progress. */
class WriterMetrics {
  private readonly accepted: client.Counter;
  private readonly duplicates: client.Counter;
  private readonly batchSize: client.Histogram;
  private readonly flushSeconds: client.Histogram;
  private readonly syncSeconds: client.Histogram;
  readonly flushFailures: client.Counter;
  private readonly rebuildGauges: Record<'running' | 'started' | 'done' | 'total' | 'lastSwap' | 'generation', client.Gauge>;

  constructor(private readonly sources: WriterSources, registers: client.Registry[]) {
    this.accepted = new client.Counter({ name: 'watchtime_events_accepted_total', help: 'Events stored and applied.', registers });
    this.duplicates = new client.Counter({
      name: 'watchtime_events_duplicate_total',
      help: 'Events acknowledged as duplicates of a stored id, and not applied again.',
      registers,
    });
    this.flushFailures = new client.Counter({
      name: 'watchtime_flush_failures_total',
      help: 'Batches whose transaction failed; every request in them was answered 503 and none of their events stored.',
      registers,
    });
    this.syncSeconds = new client.Histogram({
      name: 'watchtime_flush_sync_seconds',
      help: "Time from the end of a batch's commit on the event loop until it is durable: on SQLite the WAL's fsync on the thread pool; on PostgreSQL the whole transaction, which syncs inside COMMIT.",
      buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers,
    });
    new client.Gauge({
      name: 'watchtime_queue_capacity_events',
      help: 'Events the ingest queue holds at most (--queue-size); depth over capacity is its saturation.',
      registers,
    }).set(sources.queueCapacity);
    const gauge = (name: string, help: string) => new client.Gauge({ name: `watchtime_rebuild_${name}`, help, registers });
    this.rebuildGauges = {
      running: gauge('running', '1 while a `watchtime rebuild` of this database is under way, else 0.'),
      started: gauge('started_timestamp_seconds', 'When the running rebuild started; 0 when none. Set while running is 0: a rebuild that died.'),
      done: gauge('done_events', 'Events the running or last rebuild has applied.'),
      total: gauge('total_events', 'Events the running or last rebuild has to apply (it grows while events arrive).'),
      lastSwap: gauge('last_swap_timestamp_seconds', 'When a rebuild last swapped its totals in, in seconds since the epoch; 0 if never.'),
      generation: gauge('generation', 'Rebuilds swapped in on this database, all time.'),
    };
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
    const { workers, workerRestarts, batchRetries, analytics, analyticsApplied, analyticsFailures } = sources;
    new client.Gauge({
      name: 'watchtime_analytics_lag_events',
      help: 'Events stored that the analytics (stats, retention, time series, viewers now) do not include yet.',
      registers,
      async collect() {
        const progress = await Promise.resolve(analytics?.()).catch(() => undefined);
        if (progress) this.set(progress.lagEvents);
      },
    });
    countedAtScrape(
      'watchtime_analytics_events_total',
      "Events this process's analytics follower applied (on PostgreSQL, one server's follower works at a time).",
      () => analyticsApplied?.() ?? 0,
      registers,
    );
    countedAtScrape(
      'watchtime_analytics_round_failures_total',
      "Analytics follower rounds that failed (the log says why); the follower tries again, and the analytics lag meanwhile.",
      () => analyticsFailures?.() ?? 0,
      registers,
    );
    new client.Gauge({
      name: 'watchtime_http_workers',
      help: 'Processes serving HTTP: the workers of serve --workers N, or 1 when one process serves and writes.',
      registers,
      collect() {
        this.set(workers?.() ?? 1);
      },
    });
    countedAtScrape(
      'watchtime_http_worker_restarts_total',
      'HTTP workers that died (a crash, a kill) and were started again; their open requests got no answer.',
      () => workerRestarts?.() ?? 0,
      registers,
    );
    countedAtScrape(
      'watchtime_batch_retries_total',
      'Batches tried again (PostgreSQL): another server wrote one of their pairs meanwhile, a rebuild moved the fence, a deadlock, or a lost connection. Always 0 on SQLite.',
      () => batchRetries?.() ?? 0,
      registers,
    );
  }

  flushed(events: number, duplicates: number, seconds: number, syncSeconds: number): void {
    this.accepted.inc(events - duplicates);
    this.duplicates.inc(duplicates);
    this.batchSize.observe(events);
    this.flushSeconds.observe(seconds);
    this.syncSeconds.observe(syncSeconds);
  }

  /** Read once a scrape: the rebuild says where it is in the database. */
  async readRebuild(): Promise<void> {
    const state = await Promise.resolve(this.sources.rebuild?.()).catch(() => undefined);
    if (!state) return;
    const g = this.rebuildGauges;
    g.running.set(state.running ? 1 : 0);
    g.started.set(state.startedAt === null ? 0 : state.startedAt / 1000);
    g.done.set(state.done);
    g.total.set(state.total);
    g.lastSwap.set(state.lastSwapAt === null ? 0 : state.lastSwapAt / 1000);
    g.generation.set(state.generation);
  }
}

const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 2.5];

/** HttpSeries as data: [route, method, [status, count][], bucket counts, sum, count] per series. */
type HttpSeriesData = [string, string, [number, number][], number[], number, number][];

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

  private series(route: string, method: string): Series {
    let methods = this.byRoute.get(route);
    if (methods === undefined) this.byRoute.set(route, (methods = new Map()));
    let series = methods.get(method);
    if (series === undefined) {
      series = { statuses: new Map(), buckets: new Float64Array(LATENCY_BUCKETS.length + 1), sum: 0, count: 0 };
      methods.set(method, series);
    }
    return series;
  }

  record(route: string, anyMethod: string, status: number, seconds: number): void {
    const series = this.series(route, METHODS.has(anyMethod) ? anyMethod : 'other');
    series.statuses.set(status, (series.statuses.get(status) ?? 0) + 1);
    let bucket = 0;
    while (bucket < LATENCY_BUCKETS.length && seconds > LATENCY_BUCKETS[bucket]) bucket += 1;
    series.buckets[bucket] += 1;
    series.sum += seconds;
    series.count += 1;
  }

  /** The counts as plain data, to send to another process. */
  data(): HttpSeriesData {
    const rows: HttpSeriesData = [];
    for (const [route, methods] of this.byRoute) {
      for (const [method, s] of methods) rows.push([route, method, [...s.statuses], [...s.buckets], s.sum, s.count]);
    }
    return rows;
  }

  /** Adds another process's counts to these. */
  add(rows: HttpSeriesData): void {
    for (const [route, method, statuses, buckets, sum, count] of rows) {
      const series = this.series(route, method);
      for (const [status, n] of statuses) series.statuses.set(status, (series.statuses.get(status) ?? 0) + n);
      buckets.forEach((n, i) => (series.buckets[i] += n));
      series.sum += sum;
      series.count += count;
    }
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
