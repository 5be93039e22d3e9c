// Three servers on one PostgreSQL database, every event for one movie: how
// fast batches go when a whole audience watches the same premiere. Compare
// MOVIE_PARTS in src/store/postgres.ts (16, or 1 for a single totals row).
//   npm run build && tsx test/load/hot-movie.ts
import { execFile } from 'node:child_process';
import { serverProcess } from '../helpers.ts';
import { startPostgres } from '../support/postgres.ts';

const postgres = await startPostgres();
try {
  const db = await postgres.newDatabase();
  const servers = await Promise.all(
    [0, 1, 2].map(async () => {
      const server = serverProcess(['--db', db]);
      return { ...server, url: await server.listening };
    }),
  );
  /** Events a second over all servers: one wrk a server, 21 connections, 100-event batches, one movie. */
  const run = (seconds: number, start: number) =>
    Promise.all(
      servers.map(
        (server, i) =>
          new Promise<number>((resolve, reject) =>
            execFile(
              'wrk',
              ['-t1', '-c21', `-d${seconds}s`, '-s', 'test/load/wrk/ingest.lua', server.url, '--', '100', String(start + i * 1e7), '1'],
              { env: { ...process.env, WRK_REPORT: 'test/load/wrk/report.lua' }, encoding: 'utf8' },
              (error, out) => (error ? reject(error) : resolve((JSON.parse(/WRK_RESULT (.*)/.exec(out)![1]).requests * 100) / seconds)),
            ),
          ),
      ),
    ).then((rates) => rates.reduce((a, b) => a + b, 0));
  await run(3, 0);
  for (let round = 1; round <= 2; round++) console.log(`one hot movie, 3 servers: ${Math.round(await run(5, round * 1e8))} events/s`);
  for (const server of servers) server.child.kill('SIGTERM');
} finally {
  await postgres.destroy();
}
