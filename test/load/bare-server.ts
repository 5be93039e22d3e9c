// The baseline: a node:http server that reads and parses the body, then
// answers as watchtime does, and does nothing else. A GET gets a fixed answer
// of the size of watchtime's: at once, or with BARE_GROUPED=1 at the end of
// the event loop's turn, together with the turn's other GETs, as watchtime
// answers its lookups. With BARE_WORKERS=N, N node:cluster processes share
// the port and each answers as above: the baseline for `serve --workers N`.
// Their primary only starts them.
import cluster from 'node:cluster';
import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

const READ_ANSWER = JSON.stringify({ user: 'user-1234', slug: 'movie-234', latestMoment: 4500, watchTime: 4210, events: 902, updatedAt: new Date().toISOString() });
const GROUPED = process.env.BARE_GROUPED === '1';
const WORKERS = Number(process.env.BARE_WORKERS ?? 1);

function answerRead(res: ServerResponse) {
  res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(READ_ANSWER) });
  res.end(READ_ANSWER);
}

let pending: ServerResponse[] = [];
function answerPending() {
  const ofThisTurn = pending;
  pending = [];
  for (const res of ofThisTurn) answerRead(res);
}

const server = createServer((req, res) => {
  if (req.method === 'GET') {
    if (!GROUPED) answerRead(res);
    else {
      if (pending.length === 0) setImmediate(answerPending);
      pending.push(res);
    }
    return;
  }
  const chunks: Buffer[] = [];
  req.on('data', (chunk: Buffer) => chunks.push(chunk));
  req.on('end', () => {
    const value = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    const count = Array.isArray(value) ? value.length : 1;
    const body = JSON.stringify({ accepted: count, duplicates: 0 });
    res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
    res.end(body);
  });
});
if (WORKERS > 1 && cluster.isPrimary) {
  // The workers share port 0's one random port: announced once all of them listen.
  let listening = 0;
  cluster.on('listening', (_worker, address) => {
    listening += 1;
    if (listening === WORKERS) process.stderr.write(`listening on 127.0.0.1:${address.port}\n`);
  });
  for (let i = 0; i < WORKERS; i++) cluster.fork();
  let running = WORKERS;
  cluster.on('exit', () => {
    running -= 1;
    if (running === 0) process.exit(0);
  });
  process.on('SIGTERM', () => {
    for (const worker of Object.values(cluster.workers ?? {})) worker?.process.kill('SIGTERM');
  });
} else {
  server.listen(0, '127.0.0.1', () => {
    if (cluster.isPrimary) process.stderr.write(`listening on 127.0.0.1:${(server.address() as AddressInfo).port}\n`);
  });
  process.on('SIGTERM', () => server.close(() => process.exit(0)));
}
