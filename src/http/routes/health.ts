// What operators and load balancers ask: liveness, readiness, the metrics,
// and the figures the dashboard polls (/stats).
import type { EventSink } from '../../ingest/sink.ts';
import { StoreBusyError, type Store } from '../../store/store.ts';
import type { HttpMetrics, On } from '../answering.ts';
import { HttpProblem, notFound, sendJson } from '../problem.ts';

/** What these routes read, of the app's options. */
export interface HealthSources {
  store: Store;
  /** Where ingest hands its events: the queue, or the link to the writer process. */
  sink: EventSink;
  metrics?: HttpMetrics;
  /** True once shutdown has begun and the server no longer takes connections. */
  isClosing: () => boolean;
  /** True while the server, told to stop, still serves but tells load balancers to go (the lame duck). */
  isDraining?: () => boolean;
  /** Told of each readiness probe: the shutdown waits for a load balancer only if one is watching. */
  onReadinessProbe?: () => void;
}

export function healthRoutes(on: On, sources: HealthSources): void {
  const { store, sink, metrics, isClosing } = sources;

  on('GET', '/livez', (_req, res) => sendJson(res, 200, { status: 'live' }));

  on('GET', '/stats', async (_req, res) => {
    const state = await sink.state();
    sendJson(res, 200, {
      eventsStored: await store.eventsStored(),
      eventsCommitted: state.committedEvents,
      duplicates: state.duplicateEvents,
      queue: { depth: state.depth, capacity: sink.capacity },
      accounting: await store.settings(),
      time: new Date().toISOString(),
    });
  });

  on('GET', '/metrics', async (_req, res) => {
    if (!metrics) throw notFound('this server keeps no metrics');
    const text = await metrics.text();
    res.writeHead(200, { 'Content-Type': metrics.contentType, 'Content-Length': Buffer.byteLength(text) });
    res.end(text);
  });

  /**
   * Readiness: whether a load balancer should send this server traffic now.
   * Only what is this server's own says no: it is draining or shutting
   * down, or its ingest queue is full. Storage that cannot be written is
   * said (`degraded`), not a no: on SQLite there is no other server to send
   * the traffic to and reads are still served, and on PostgreSQL every
   * server shares the database, so taking them all out would serve nothing.
   */
  on('GET', '/readyz', async (_req, res) => {
    sources.onReadinessProbe?.();
    const reasons: string[] = [];
    let database = 'writable';
    try {
      await sink.checkWritable();
    } catch (error) {
      database =
        error instanceof StoreBusyError
          ? 'locked by another writer (a rebuild); events wait in the queue'
          : `not writable: ${(error as Error).message}`;
    }
    const state = await sink.state();
    if (database === 'writable' && state.lastError) database = `a flush failed in the last seconds: ${state.lastError.message}`;
    const queueState = { depth: state.depth, capacity: sink.capacity };
    if (sources.isDraining?.()) reasons.push('draining: the server is stopping and still serves; send new requests elsewhere');
    if (isClosing()) reasons.push('the server is shutting down');
    if (state.depth >= sink.capacity) reasons.push('the ingest queue is full');
    // A database that cannot be reached cannot say its rule either; `database` already says why.
    const accounting = await Promise.resolve(store.settings()).catch(() => undefined);
    if (reasons.length > 0) {
      throw new HttpProblem(503, 'not-ready', 'Not ready', reasons.join('; '), {
        extra: { queue: queueState, database, accounting },
      });
    }
    const status = database === 'writable' || database.startsWith('locked') ? 'ready' : 'degraded';
    sendJson(res, 200, { status, queue: queueState, database, accounting });
  });
}
