// watchtime's command line: serve, query, rebuild, generate.
import { readFileSync } from 'node:fs';
import { Command, CommanderError } from 'commander';
import { ServeLockError } from '../store/serve-lock.ts';
import { DatabaseUnusableError } from '../store/sqlite.ts';
import { SettingsMismatchError } from '../accounting.ts';
import { registerBackup } from './backup.ts';
import { registerGenerate } from './generate.ts';
import { CliError, EXIT, secretsFromFiles } from './options.ts';
import { registerQuery } from './query.ts';
import { registerRebuild } from './rebuild.ts';
import { registerServe } from './serve.ts';

const { version } = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
  version: string;
};

const program = new Command('watchtime')
  .description('Ingests video watch-progress events; answers watch time per movie and per user, and resume points.')
  .version(version)
  // Bad usage exits 2, not commander's 1; set before the commands so they inherit it.
  .exitOverride()
  .showHelpAfterError('(run with --help for usage)');

registerServe(program);
registerQuery(program);
registerRebuild(program);
registerBackup(program);
registerGenerate(program);

try {
  secretsFromFiles();
  await program.parseAsync(process.argv);
} catch (error) {
  if (error instanceof CommanderError) {
    process.exitCode = error.exitCode === 0 ? EXIT.ok : EXIT.usage;
  } else if (error instanceof CliError) {
    process.stderr.write(`watchtime: ${error.message}\n`);
    process.exitCode = error.exitCode;
  } else if (error instanceof DatabaseUnusableError || error instanceof SettingsMismatchError || error instanceof ServeLockError) {
    process.stderr.write(`watchtime: ${error.message}\n`);
    process.exitCode = EXIT.failure;
  } else if (isConnectionError(error)) {
    // A database that is away or refuses us: the operator's to fix, in one line (the URL is not repeated: it may hold a password).
    process.stderr.write(`watchtime: cannot use the database: ${(error as Error).message} (${(error as { code: string }).code})\n`);
    process.exitCode = EXIT.failure;
  } else if ((error as { code?: string }).code === 'EADDRINUSE') {
    process.stderr.write(`watchtime: ${(error as Error).message}: another process listens there (pass --port)\n`);
    process.exitCode = EXIT.failure;
  } else {
    process.stderr.write(`watchtime: ${(error as Error).stack ?? String(error)}\n`);
    process.exitCode = EXIT.failure;
  }
}

/** A network error, or PostgreSQL's refusal of a connection (SQLSTATE class 08, 28 or 3D: no such database). */
function isConnectionError(error: unknown): boolean {
  const code = (error as { code?: unknown }).code;
  if (typeof code !== 'string') return false;
  return ['ECONNREFUSED', 'ECONNRESET', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'EHOSTUNREACH', '57P03'].includes(code) || /^(08|28|3D)/.test(code);
}
