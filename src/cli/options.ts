// Options shared by the commands, each also read from a WATCHTIME_* variable.
import { readFileSync } from 'node:fs';
import { InvalidArgumentError, Option } from 'commander';
import { ACCOUNTING_MODES } from '../accounting.ts';
import type { LogLevel } from '../log.ts';

/** What `serve` and the other commands take when not told. */
export const SERVER_DEFAULTS = {
  host: '0.0.0.0',
  port: 8000,
  db: './data/watchtime.db',
  flushMs: 5,
  batchSize: 10_000,
  queueSize: 100_000,
} as const;

// Checked against pino's own levels, so the two cannot drift apart (a type import: pino is not loaded).
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const satisfies readonly LogLevel[];

/** Exit codes of SPEC section 5. */
export const EXIT = { ok: 0, failure: 1, usage: 2, notFound: 3 } as const;

/** A failure the user should read, with the exit code it ends with. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: number = EXIT.failure,
  ) {
    super(message);
  }
}

export function integer(min: number, max: number) {
  return (raw: string): number => {
    const value = Number(raw);
    if (!/^\d+$/.test(raw.trim()) || value < min || value > max) {
      throw new InvalidArgumentError(`must be an integer from ${min} to ${max}.`);
    }
    return value;
  };
}

const TOKEN = /^[\x21-\x7e]+$/;
const TOKEN_RULE = 'must be one or more visible ASCII characters, with no spaces';

/**
 * Checks a bearer token given to an option: an empty one (an unset shell
 * variable) would leave the API open without a word, and one with spaces or
 * other than visible ASCII could never be sent back in an Authorization
 * header as given. The message never shows the value: it is a secret.
 */
export function checkToken(option: string, value: string | undefined): void {
  if (value !== undefined && !TOKEN.test(value)) {
    throw new CliError(`${option} ${TOKEN_RULE} (unset it to leave the routes open); the value is not shown`, EXIT.usage);
  }
}

/** The settings that may be secrets: each can come from a file named by WATCHTIME_<NAME>_FILE instead. */
const SECRET_SETTINGS = ['WATCHTIME_INGEST_TOKEN', 'WATCHTIME_READ_TOKEN', 'WATCHTIME_DB'];

/**
 * Reads WATCHTIME_INGEST_TOKEN_FILE and the like into their variables, so
 * that a secret stays out of `ps` and of the environment of a unit file
 * (the Docker and Kubernetes secrets convention). One trailing newline is
 * dropped, as editors and `echo` add one.
 */
export function secretsFromFiles(env: NodeJS.ProcessEnv = process.env): void {
  for (const name of SECRET_SETTINGS) {
    const file = env[`${name}_FILE`];
    if (file === undefined) continue;
    if (env[name] !== undefined) throw new CliError(`set ${name} or ${name}_FILE, not both`, EXIT.usage);
    let value: string;
    try {
      value = readFileSync(file, 'utf8').replace(/\r?\n$/, '');
    } catch (error) {
      throw new CliError(`cannot read ${name}_FILE ${file}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
    }
    if (name.endsWith('_TOKEN') && !TOKEN.test(value)) {
      throw new CliError(`the token in ${name}_FILE ${file} ${TOKEN_RULE}, after one trailing newline; the value is not shown`, EXIT.usage);
    }
    env[name] = value;
  }
}

/** `--flag <value>` that can also come from WATCHTIME_FLAG. */
export function envOption(flags: string, description: string): Option {
  const long = /--([a-z-]+)/.exec(flags)![1];
  return new Option(flags, description).env(`WATCHTIME_${long.replace(/-/g, '_').toUpperCase()}`);
}

export const dbOption = () =>
  envOption('--db <file-or-url>', 'SQLite database file, or a postgres:// URL for PostgreSQL').default(SERVER_DEFAULTS.db);

/** No default: unset means "as the database records it". */
export const accountingOptions = () => [
  envOption('--accounting <mode>', 'watch-time rule (default: as recorded in the database, else progress)').choices(
    ACCOUNTING_MODES,
  ),
  envOption('--max-step <seconds>', 'progress: longest forward step counted as watching (default: as recorded, else 120)')
    .argParser(integer(1, 86_400)),
];
