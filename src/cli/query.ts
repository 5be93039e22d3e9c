import type { Command } from 'commander';
import { openStore } from '../store/open.ts';
import { DatabaseUnusableError } from '../store/sqlite.ts';
import { nothingFor, type Awaitable, type Store } from '../store/store.ts';
import type { SeriesScope } from '../store/analytics-rows.ts';
import { formatRecord, formatRetention, formatStats, formatTable, formatTimeSeries, watched } from './format.ts';
import { CliError, dbOption, envOption, EXIT, integer } from './options.ts';

interface QueryOptions {
  db: string;
  json?: boolean;
  limit?: number;
  points?: string;
  movie?: string;
  user?: string;
  interval?: string;
  from?: string;
  to?: string;
}

async function openReadonly(db: string): Promise<Store> {
  try {
    return await openStore(db, { readonly: true });
  } catch (error) {
    if (error instanceof DatabaseUnusableError) throw new CliError(`${error.message} (pass --db or set WATCHTIME_DB)`);
    throw error;
  }
}

async function argument(value: string, field: 'user' | 'slug'): Promise<string> {
  // The validator is loaded only to check a name: it takes about 20 MB that rebuild and --help need not.
  const { checkName } = await import('../event.ts');
  const errors = checkName(value, field);
  if (errors.length > 0) throw new CliError(errors[0].message, EXIT.usage);
  return value;
}

/**
 * The analytics answers (SPEC section 7), made by the functions the API's
 * routes answer with, and their parameters' parsers, which are the API's
 * too. Loaded when asked for, as the validator is: they load it.
 */
async function analytics() {
  const [answers, params, buckets] = await Promise.all([
    import('../analytics/answers.ts'),
    import('../analytics/params.ts'),
    import('../analytics/buckets.ts'),
  ]);
  return { ...answers, ...params, RangeProblem: buckets.RangeProblem };
}
type Analytics = Awaited<ReturnType<typeof analytics>>;

/** A parameter's error as bad usage (exit 2) that names the option and its rule, as the API's 400 names the parameter. */
function usageOf(a: Analytics, error: unknown): unknown {
  const problem = error instanceof a.RangeProblem ? a.rangeError(error) : error;
  return problem instanceof a.ParameterError ? new CliError(`invalid --${problem.parameter}: ${problem.rule}`, EXIT.usage) : error;
}

/** An option's value, by the rule of the API's query parameter of the same name. */
function option<T>(a: Analytics, parse: () => T): T {
  try {
    return parse();
  } catch (error) {
    throw usageOf(a, error);
  }
}

/** An analytics answer: coverage under sum accounting exits 1 with the reason (the API's 409), a bad range 2 (its 400). */
async function analyticsAnswer<T>(a: Analytics, answer: () => Promise<T | undefined>): Promise<T | undefined> {
  try {
    return await answer();
  } catch (error) {
    if (error instanceof a.NoCoverageError) throw new CliError(error.message, EXIT.failure);
    throw usageOf(a, error);
  }
}

/** Opens the database read-only, answers, prints; exit 3 when there is nothing to show. */
async function answer<T>(
  options: QueryOptions,
  lookup: (store: Store) => Awaitable<T | undefined>,
  missing: string,
  text: (found: T) => string,
): Promise<void> {
  const store = await openReadonly(options.db);
  try {
    const found = await lookup(store);
    if (found === undefined) throw new CliError(missing, EXIT.notFound);
    process.stdout.write(`${options.json ? JSON.stringify(found, null, 2) : text(found)}\n`);
  } finally {
    await store.close();
  }
}

export function registerQuery(program: Command): void {
  const query = program
    .command('query')
    .description('answer from the database file, read-only (works while a server runs on it)');

  const sub = (name: string, description: string) =>
    query
      .command(name)
      .description(description)
      .addOption(dbOption())
      .addOption(envOption('--json', 'print the answer as the HTTP API does'));

  sub('movie <slug>', "a movie's total watch time").action((slug: string, options: QueryOptions) =>
    answer(options, async (s) => s.movie(await argument(slug, 'slug')), nothingFor.movie(slug), (m) =>
      formatRecord([['movie', m.slug], ['watched', watched(m.watchTime)], ['viewers', m.viewers], ['events', m.events], ['updated', m.updatedAt]]),
    ),
  );

  sub('user <user>', "a user's total watch time across movies").action((user: string, options: QueryOptions) =>
    answer(options, async (s) => s.user(await argument(user, 'user')), nothingFor.user(user), (u) =>
      formatRecord([['user', u.user], ['watched', watched(u.watchTime)], ['movies', u.movies], ['events', u.events], ['updated', u.updatedAt]]),
    ),
  );

  sub('latest <user> <slug>', 'the latest moment a user reached in a movie (the resume point)').action(
    (user: string, slug: string, options: QueryOptions) =>
      answer(
        options,
        async (s) => s.pair(await argument(user, 'user'), await argument(slug, 'slug')),
        nothingFor.pair(user, slug),
        (p) =>
          formatRecord([['user', p.user], ['movie', p.slug], ['latest moment', `${p.latestMoment} s`],
            ['watched', watched(p.watchTime)], ['events', p.events], ['updated', p.updatedAt]]),
      ),
  );

  sub('movies <user>', "a user's movies, most recently watched first")
    .addOption(envOption('--limit <n>', 'how many').argParser(integer(1, 1_000_000)).default(20))
    .action((user: string, options: QueryOptions) =>
      answer(options, async (s) => (await s.userMovies(await argument(user, 'user'), options.limit!, 0))?.items,
        nothingFor.user(user), (items) =>
          formatTable(['movie', 'latest moment', 'watched', 'events', 'updated'],
            items.map((m) => [m.slug, m.latestMoment, m.watchTime, m.events, m.updatedAt])),
      ),
    );

  sub('top', 'movies by total watch time, largest first')
    .addOption(envOption('--limit <n>', 'how many').argParser(integer(1, 1_000_000)).default(10))
    .action((options: QueryOptions) =>
      answer(options, async (s) => (await s.topMovies(options.limit!, 0)).items, 'no movies yet', (items) => {
        if (items.length === 0) return 'no movies yet';
        return formatTable(['rank', 'movie', 'watched (s)', 'viewers', 'events'],
          items.map((m, i) => [i + 1, m.slug, m.watchTime, m.viewers, m.events]));
      }),
    );

  sub('stats <slug>', "a movie's duration, coverage, rewatching and completion (progress accounting)").action(
    async (slug: string, options: QueryOptions) => {
      const name = await argument(slug, 'slug');
      const a = await analytics();
      await answer(options, (s) => analyticsAnswer(a, () => a.movieStats(s.analytics, name)), nothingFor.movie(slug), formatStats);
    },
  );

  sub('retention <slug>', 'how many viewers each moment of a movie kept, at P points (progress accounting)')
    .addOption(envOption('--points <p>', 'how many moments, spread evenly over the duration: 1 to 1000 (default: 100)'))
    .action(async (slug: string, options: QueryOptions) => {
      const name = await argument(slug, 'slug');
      const a = await analytics();
      const points = option(a, () => a.parsePoints(options.points));
      await answer(options, (s) => analyticsAnswer(a, () => a.retentionCurve(s.analytics, name, points)), nothingFor.movie(slug), formatRetention);
    });

  sub('timeseries', "watch time, viewers and events by UTC bucket of the events' receive time: the service's, a movie's or a user's")
    .addOption(envOption('--movie <slug>', "a movie's series").conflicts('user'))
    .addOption(envOption('--user <user>', "a user's series"))
    .addOption(envOption('--interval <interval>', 'minute, hour or day (default: hour)'))
    .addOption(envOption('--from <iso>', 'ISO 8601 date or date-time, UTC unless it says (default: 48 buckets before --to)'))
    .addOption(envOption('--to <iso>', 'ISO 8601, excluded (default: the end of the current bucket)'))
    .action(async (options: QueryOptions) => {
      const scope: SeriesScope =
        options.movie !== undefined ? { kind: 'movie', slug: await argument(options.movie, 'slug') }
        : options.user !== undefined ? { kind: 'user', user: await argument(options.user, 'user') }
        : { kind: 'service' };
      const a = await analytics();
      const interval = option(a, () => a.parseInterval(options.interval));
      const range = option(a, () => ({ from: a.parseTime('from', options.from), to: a.parseTime('to', options.to) }));
      const missing = scope.kind === 'movie' ? nothingFor.movie(scope.slug) : scope.kind === 'user' ? nothingFor.user(scope.user) : '';
      const label = scope.kind === 'movie' ? `movie ${scope.slug}` : scope.kind === 'user' ? `user ${scope.user}` : 'the service';
      await answer(options, (s) => analyticsAnswer(a, () => a.timeSeries(s.analytics, scope, interval, range)), missing,
        (series) => formatTimeSeries(series, label));
    });
}
