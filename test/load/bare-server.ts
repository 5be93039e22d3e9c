// The baseline: a node:http server that reads and parses the body, then
// answers as watchtime does, and does nothing else. A GET gets a fixed answer
// of the size of watchtime's.
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

const READ_ANSWER = JSON.stringify({ user: 'user-1234', slug: 'movie-234', latestMoment: 4500, watchTime: 4210, events: 902, updatedAt: new Date().toISOString() });

const server = createServer((req, res) => {
  if (req.method === 'GET') {
    res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(READ_ANSWER) });
    res.end(READ_ANSWER);
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
server.listen(0, '127.0.0.1', () => {
  process.stderr.write(`listening on 127.0.0.1:${(server.address() as AddressInfo).port}\n`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
