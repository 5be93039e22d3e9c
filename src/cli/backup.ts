// `watchtime backup --to FILE`: an online, consistent copy of a live SQLite
// database, taken beside a running server (see ../store/sqlite-backup.ts).
import { Option, type Command } from 'commander';
import { isPostgresUrl } from '../store/open.ts';
import { BackupError, backupSqlite } from '../store/sqlite-backup.ts';
import { CliError, dbOption, envOption, EXIT } from './options.ts';

interface BackupOptions {
  db: string;
  to: string;
  force?: boolean;
  json?: boolean;
}

/** What a PostgreSQL deployment uses instead: the database's own tools. */
export const POSTGRES_BACKUP_ADVICE =
  'backup copies SQLite files only; for a PostgreSQL --db use its own tools: pg_dump for a logical copy ' +
  '(pg_dump -Fc, restored with pg_restore), or physical backups with WAL archiving for point-in-time recovery ' +
  '(pg_basebackup, pgBackRest, Barman, or your provider\'s snapshots)';

export function registerBackup(program: Command): void {
  program
    .command('backup')
    .description(
      'copy a SQLite database to FILE, consistent as of one moment, while a server may be writing to it ' +
        '(SQLite only; for PostgreSQL use pg_dump or its physical backups)',
    )
    .addOption(envOption('--to <file>', 'the backup file to write (made beside it under a temporary name, then renamed)').makeOptionMandatory())
    .addOption(dbOption())
    // Not from the environment: a WATCHTIME_FORCE left set would replace backups without a word.
    .addOption(new Option('--force', 'replace the --to file if it exists'))
    .addOption(envOption('--json', 'print the result as JSON'))
    .action((options: BackupOptions) => {
      if (isPostgresUrl(options.db)) throw new CliError(POSTGRES_BACKUP_ADVICE, EXIT.usage);
      let result;
      try {
        result = backupSqlite(options.db, options.to, { force: options.force });
      } catch (error) {
        if (error instanceof BackupError) throw new CliError(error.message);
        throw error;
      }
      const { file, events, bytes, seconds, schemaVersion } = result;
      process.stdout.write(
        options.json
          ? `${JSON.stringify({ file, events, bytes, seconds, schemaVersion })}\n`
          : `backed up ${events} events to ${file}: ${bytes} bytes (${mebibytes(bytes)}) in ${seconds.toFixed(2)} s, schema version ${schemaVersion}\n`,
      );
    });
}

const mebibytes = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
