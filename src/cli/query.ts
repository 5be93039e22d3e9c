import type { Command } from 'commander';
import { openStore } from '../store/open.ts';
import { DatabaseUnusableError } from '../store/sqlite.ts';
import { nothingFor, type Awaitable, type Store } from '../store/store.ts';
import { formatRecord, formatTable, watched } from './format.ts';
import { CliError, dbOption, envOption, EXIT, integer } from './options.ts';

interface QueryOptions {
  db: string;
  json?: boolean;
  limit?: number;
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
}
