// The node:http server around the app: its timeouts, listening, and the end
// of its connections at shutdown. The one-process server and each worker use it.
import { createServer, type RequestListener, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface ListenOptions {
  host: string;
  port: number;
  /** Slow clients are cut off: headers must arrive within headersMs, the whole request within requestMs. */
  timeouts?: { headersMs: number; requestMs: number };
  keepAliveMs: number;
}

export interface Listening {
  server: Server;
  port: number;
  /** Where clients reach it, for the log: localhost for all interfaces. */
  url: string;
}

export async function listen(options: ListenOptions, handler: RequestListener): Promise<Listening> {
  const { headersMs, requestMs } = options.timeouts ?? { headersMs: 10_000, requestMs: 30_000 };
  const server = createServer(
    {
      headersTimeout: headersMs,
      requestTimeout: requestMs,
      keepAliveTimeout: options.keepAliveMs,
      // Node checks those timeouts on this tick, every 30 s by default: far too coarse.
      connectionsCheckingInterval: Math.min(1_000, headersMs / 2),
    },
    handler,
  );
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  return { server, port, url: urlOf(options.host, port) };
}

/** Where clients reach a server listening on host and port: localhost for all interfaces. */
export function urlOf(host: string, port: number): string {
  const shown = host === '0.0.0.0' || host === '::' ? 'localhost' : host;
  return `http://${shown.includes(':') ? `[${shown}]` : shown}:${port}`;
}

/**
 * Stops taking connections and closes them as they go idle, once `answered`
 * settles (the queued events are committed and their requests answered);
 * stragglers are cut at the end of the grace.
 */
export async function closeConnections(server: Server, answered: Promise<void>, closeGraceMs: number): Promise<void> {
  const connectionsDone = new Promise<void>((resolve) => server.close(() => resolve()));
  server.closeIdleConnections();
  await answered;
  // Connections busy until now go idle once answered: close them as they do, the stragglers at the end of the grace.
  const sweep = setInterval(() => server.closeIdleConnections(), 20);
  const grace = setTimeout(() => server.closeAllConnections(), closeGraceMs);
  await connectionsDone;
  clearInterval(sweep);
  clearTimeout(grace);
}

export const isLoopback = (host: string) => host === 'localhost' || host === '::1' || host.startsWith('127.');
