import { existsSync } from 'node:fs';
import cliProgress from 'cli-progress';
import type { Command } from 'commander';
import { describeRule, resolveRule, type AccountingMode } from '../accounting.ts';
import { isPostgresUrl, openStore } from '../store/open.ts';
import { accountingOptions, CliError, dbOption } from './options.ts';

interface RebuildOptions {
  db: string;
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
    .addOption(dbOption());
  for (const option of accountingOptions()) command.addOption(option);
  command.action(async (options: RebuildOptions) => {
    if (!isPostgresUrl(options.db) && !existsSync(options.db)) {
      throw new CliError(`no database at ${options.db} (pass --db or set WATCHTIME_DB)`);
    }
    const store = await openStore(options.db, { busyTimeoutMs: WAIT_FOR_WRITER_MS });
    try {
      const rule = resolveRule(await store.settings(), options);
      const bar = new cliProgress.SingleBar(
        { stream: process.stderr, format: 'rebuild [{bar}] {percentage}% {value}/{total} events, eta {eta_formatted}' },
        cliProgress.Presets.shades_classic,
      );
      const started = process.hrtime.bigint();
      const result = await store.rebuild(rule, ({ done, total }) => {
        if (done === 0) bar.start(total, 0);
        else bar.update(done);
      });
      bar.stop();
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      const rate = seconds > 0 ? Math.round(result.done / seconds) : result.done;
      const peakMb = Math.round(process.resourceUsage().maxRSS / 1024);
      process.stdout.write(
        `rebuilt ${result.done} events under accounting ${describeRule(rule)} in ${seconds.toFixed(2)} s ` +
          `(${rate} events/s, peak RSS ${peakMb} MB)\n`,
      );
    } finally {
      await store.close();
    }
  });
}
