import { existsSync } from 'node:fs';
import type { Command } from 'commander';
import { describeRule, resolveRule, type AccountingMode } from '../accounting.ts';
import { isPostgresUrl, openStore } from '../store/open.ts';
import type { RebuildProgress } from '../store/store.ts';
import { accountingOptions, CliError, dbOption, envOption } from './options.ts';
import { startProgress, type Progress } from './progress.ts';

interface RebuildOptions {
  db: string;
  json?: boolean;
  accounting?: AccountingMode;
  maxStep?: number;
}

/** How long rebuild waits for a running server's current write to finish. */
const WAIT_FOR_WRITER_MS = 10_000;

export function registerRebuild(program: Command): void {
  const command = program
    .command('rebuild')
    .description(
      'recompute every aggregate from the stored events, beside the live totals, then swap them in at once ' +
        '(readers see the old or the new totals); a server running on the same file keeps taking events meanwhile',
    )
    .addOption(dbOption())
    .addOption(envOption('--json', 'print the result as JSON; progress as plain lines'));
  for (const option of accountingOptions()) command.addOption(option);
  command.action(async (options: RebuildOptions) => {
    if (!isPostgresUrl(options.db) && !existsSync(options.db)) {
      throw new CliError(`no database at ${options.db} (pass --db or set WATCHTIME_DB)`);
    }
    const store = await openStore(options.db, {
      busyTimeoutMs: WAIT_FOR_WRITER_MS,
      onMigration: (step) => process.stderr.write(`watchtime: applied schema migration ${step.version} (${step.name}) in ${Math.round(step.ms)} ms\n`),
    });
    try {
      const rule = resolveRule(await store.settings(), options);
      const started = process.hrtime.bigint();
      let progress: Progress | undefined;
      let result: RebuildProgress;
      try {
        result = await store.rebuild(rule, ({ done, total }) => {
          progress ??= startProgress({
            total,
            json: options.json,
            bar: 'rebuild [{bar}] {percentage}% {value}/{total} events, eta {eta_formatted}',
            line: (value, all) => `rebuild: ${value} of ${all} events`,
          });
          progress.update(done);
        });
      } finally {
        progress?.stop(); // a failed rebuild too says how far it went
      }
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      const rate = seconds > 0 ? Math.round(result.done / seconds) : result.done;
      const peakMb = Math.round(process.resourceUsage().maxRSS / 1024);
      process.stdout.write(
        options.json
          ? `${JSON.stringify({ events: result.done, ...rule, seconds, eventsPerSecond: rate, peakRssMb: peakMb }, null, 2)}\n`
          : `rebuilt ${result.done} events under accounting ${describeRule(rule)} in ${seconds.toFixed(2)} s ` +
              `(${rate} events/s, peak RSS ${peakMb} MB)\n`,
      );
    } finally {
      await store.close();
    }
  });
}
