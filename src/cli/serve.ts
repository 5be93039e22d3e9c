import { InvalidArgumentError, type Command } from 'commander';
import type { LogLevel } from '../log.ts';
import { accountingOptions, checkToken, dbOption, envOption, integer, LOG_LEVELS, SERVER_DEFAULTS } from './options.ts';

const workerCount = integer(1, 256);
function workersOption(raw: string): number | 'auto' {
  if (raw.trim() === 'auto') return 'auto';
  try {
    return workerCount(raw);
  } catch {
    throw new InvalidArgumentError('must be auto or an integer from 1 to 256.');
  }
}

interface ServeOptions {
  host: string;
  port: number;
  db: string;
  accounting?: 'progress' | 'sum';
  maxStep?: number;
  ingestToken?: string;
  readToken?: string;
  flushMs: number;
  batchSize: number;
  queueSize: number;
  bodyMemory: number;
  drainMs?: number;
  closeGraceMs?: number;
  keepAliveMs?: number;
  workers: number | 'auto';
  logLevel: LogLevel;
}

export function registerServe(program: Command): void {
  const command = program
    .command('serve')
    .description('run the HTTP service')
    .addOption(envOption('--host <address>', 'address to listen on (all interfaces by default, for clients in containers)').default(SERVER_DEFAULTS.host))
    .addOption(envOption('--port <port>', 'port to listen on').argParser(integer(0, 65_535)).default(SERVER_DEFAULTS.port))
    .addOption(dbOption());
  for (const option of accountingOptions()) command.addOption(option);
  command
    .addOption(envOption('--ingest-token <token>', 'require Authorization: Bearer <token> on every POST'))
    .addOption(envOption('--read-token <token>', 'require Authorization: Bearer <token> on every read but /livez and /readyz'))
    .addOption(envOption('--flush-ms <ms>', 'longest the oldest queued event waits before its flush starts; also the retry interval while the database is locked').argParser(integer(1, 10_000)).default(SERVER_DEFAULTS.flushMs))
    .addOption(envOption('--batch-size <events>', 'most events committed in one transaction').argParser(integer(1, 1_000_000)).default(SERVER_DEFAULTS.batchSize))
    .addOption(envOption('--queue-size <events>', 'most events waiting for a commit; past it POSTs get 503').argParser(integer(1, 10_000_000)).default(SERVER_DEFAULTS.queueSize))
    .addOption(envOption('--body-memory <MiB>', 'most MiB of request bodies read at once, all clients together; past it POSTs get 503 (at least 16: one body may be 16 MiB; with workers, each takes an equal share of at least 16)').argParser(integer(16, 65_536)).default(64))
    .addOption(envOption('--drain-ms <ms>', 'on SIGTERM, how long /readyz answers 503 while requests are still served, if a load balancer probed it in the last minute (default 5000)').argParser(integer(0, 600_000)))
    .addOption(envOption('--close-grace-ms <ms>', 'on SIGTERM, how long open requests may take once the queue is flushed (default 5000)').argParser(integer(0, 600_000)))
    .addOption(envOption('--keep-alive-ms <ms>', 'how long an idle keep-alive connection is kept; above a load balancer\'s idle timeout (default 65000)').argParser(integer(1, 3_600_000)))
    .addOption(envOption('--workers <n>', 'processes that serve HTTP, beside one that writes; 1 serves and writes in one process; auto: 1 on up to 2 cores, else one a core but the writer\'s').argParser(workersOption).default('auto'))
    .addOption(envOption('--log-level <level>', 'least severe log lines written').choices(LOG_LEVELS).default('info'))
    .action(async (options: ServeOptions) => {
      checkToken('--ingest-token', options.ingestToken);
      checkToken('--read-token', options.readToken);
      // Loaded here, not at start: the other commands need none of the server's modules (about 25 MB).
      const [{ startServer }, { createLogger }, { autoWorkers }] = await Promise.all([import('../server.ts'), import('../log.ts'), import('../config.ts')]);
      const server = await startServer(
        {
          ...options,
          bodyMemory: options.bodyMemory * 1024 * 1024,
          workers: options.workers === 'auto' ? autoWorkers() : options.workers,
          rule: { accounting: options.accounting, maxStep: options.maxStep },
        },
        createLogger(options.logLevel),
      );
      const { log } = server;
      let stopping = false;
      const stop = (signal: string) => {
        if (stopping) {
          log.warn(`${signal} again: exiting without waiting`);
          process.exit(1);
        }
        stopping = true;
        log.info(`${signal}: flushing queued events and stopping`);
        // SIGTERM is what an orchestrator sends, and gets the lame duck; Ctrl-C on a terminal does not wait.
        server.close({ drain: signal === 'SIGTERM' }).then(
          () => process.exit(0),
          (error) => {
            log.error({ err: error }, 'shutdown failed');
            process.exit(1);
          },
        );
      };
      process.on('SIGINT', () => stop('SIGINT'));
      process.on('SIGTERM', () => stop('SIGTERM'));
    });
}
