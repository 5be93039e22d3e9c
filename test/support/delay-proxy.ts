// A TCP proxy that holds every chunk for a while in each direction: a
// database some distance away, for the benchmark and the tests. With jitter,
// each chunk waits delayMs plus up to jitterMs more, as on a real network:
// connections overtake one another, while each keeps its bytes in order.
import net from 'node:net';

export interface DelayProxy {
  /** The proxy's port on 127.0.0.1. */
  port: number;
  /** The most connections seen at once waiting for the server's answer: queries in flight together. */
  mostWaiting(): number;
  close(): Promise<void>;
}

export async function delayProxy(target: { host: string; port: number }, delayMs: number, jitterMs = 0): Promise<DelayProxy> {
  const sockets = new Set<net.Socket>();
  const waiting = new Set<net.Socket>();
  let mostWaiting = 0;
  const forward = (from: net.Socket, to: net.Socket, asks: boolean, client: net.Socket) => {
    // When the last chunk goes: a later chunk never goes before it.
    let last = 0;
    const later = (action: () => void) => {
      last = Math.max(last, performance.now() + delayMs + Math.random() * jitterMs);
      setTimeout(action, last - performance.now());
    };
    from.on('data', (chunk) => {
      if (asks) {
        waiting.add(client);
        mostWaiting = Math.max(mostWaiting, waiting.size);
      } else waiting.delete(client);
      later(() => to.writable && to.write(chunk));
    });
    from.on('end', () => later(() => to.end()));
    from.on('error', () => to.destroy());
    from.on('close', () => later(() => to.destroy()));
  };
  const server = net.createServer((client) => {
    const upstream = net.connect(target);
    for (const socket of [client, upstream]) {
      socket.setNoDelay(true);
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
    }
    forward(client, upstream, true, client);
    forward(upstream, client, false, client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    mostWaiting: () => mostWaiting,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

/** The same postgres:// URL through a proxy. */
export function viaProxy(url: string, proxy: DelayProxy): string {
  const through = new URL(url);
  through.hostname = '127.0.0.1';
  through.port = String(proxy.port);
  return through.toString();
}
