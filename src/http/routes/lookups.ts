// The reads of SPEC section 3: the three lookups (a movie's watch time, a
// user's, and a user's resume point in a movie), through polka's routes and
// on a fast path for plain requests; then a user's movies and the top movies.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Request } from 'polka';
import { checkName } from '../../event.ts';
import { LOOKUP_ROUTES } from '../../metrics.ts';
import { nothingFor, type Store } from '../../store/store.ts';
import type { AnswerThen, Guard, On } from '../answering.ts';
import { nameParam, pageLinks, pageParams } from '../params.ts';
import { notFound, notFoundProblem, sendJson, sendProblem } from '../problem.ts';
import { requestId } from '../request-id.ts';

/** The three lookups' paths, without query: a movie's slug, or a user's name and maybe a slug. */
const LOOKUP_PATH = /^\/(?:movies\/([^/?#]+)\/watch-time|users\/([^/?#]+)\/(?:watch-time|movies\/([^/?#]+)\/latest-moment))$/;

/** A path segment decoded, if it decodes to a valid name. */
function plainName(segment: string): string | undefined {
  let name = segment;
  if (segment.includes('%')) {
    try {
      name = decodeURIComponent(segment);
    } catch {
      return undefined;
    }
  }
  return checkName(name, 'user').length === 0 ? name : undefined;
}

export interface LookupOptions {
  store: Store;
  guard: Guard;
  answerThen: AnswerThen;
}

/** Registers the read routes; returns the lookups' fast path (plainLookup), which the app tries before polka's routing. */
export function lookupRoutes(on: On, { store, guard, answerThen }: LookupOptions) {
  // The three lookups: through polka's routes, and answered before polka for plain requests (plainLookup).
  const lookups = {
    movie: { find: ([slug]: string[]) => store.movie(slug), missing: ([slug]: string[]) => nothingFor.movie(slug) },
    user: { find: ([user]: string[]) => store.user(user), missing: ([user]: string[]) => nothingFor.user(user) },
    pair: {
      find: ([user, slug]: string[]) => store.pair(user, slug),
      missing: ([user, slug]: string[]) => nothingFor.pair(user, slug),
    },
  };
  type Lookup = keyof typeof lookups;
  /** A lookup's answer; a name with no events is an answer too (404), made without an Error and not logged. */
  const sendLookup = (req: IncomingMessage, res: ServerResponse, kind: Lookup, names: string[], found: object | undefined) => {
    if (found) sendJson(res, 200, found);
    else sendProblem(res, notFoundProblem(lookups[kind].missing(names)), requestId(req));
  };
  const lookupRoute = (kind: Lookup, fields: ('user' | 'slug')[]) => async (req: Request, res: ServerResponse) => {
    const names = fields.map((field) => nameParam(req, field));
    sendLookup(req, res, kind, names, await lookups[kind].find(names));
  };

  on('GET', '/movies/:slug/watch-time', lookupRoute('movie', ['slug']));
  on('GET', '/users/:user/watch-time', lookupRoute('user', ['user']));
  on('GET', '/users/:user/movies/:slug/latest-moment', lookupRoute('pair', ['user', 'slug']));

  /** A plain lookup read in this turn of the event loop, to be answered at its end. */
  interface PendingLookup {
    req: IncomingMessage;
    res: ServerResponse;
    kind: Lookup;
    names: string[];
    started: number;
  }
  let pending: PendingLookup[] = [];

  const answerLookup = ({ req, res, kind, names, started }: PendingLookup) =>
    answerThen(req, res, started, LOOKUP_ROUTES[kind], () => {
      guard(req, req.url!, res);
      const found = lookups[kind].find(names);
      if (found instanceof Promise) return found.then((f) => sendLookup(req, res, kind, names, f));
      sendLookup(req, res, kind, names, found);
    });

  /**
   * Answers the plain lookups of a turn together, once the event loop has
   * read every request that was ready (setImmediate runs after the poll
   * phase). Answering each as soon as it was read ran at about two thirds of
   * the rate, pinned (see Performance).
   */
  const answerPending = () => {
    const ofThisTurn = pending;
    pending = [];
    for (const lookup of ofThisTurn) answerLookup(lookup);
  };

  /**
   * Players look up their resume point one request at a time, so these
   * lookups skip polka's routing when the path is plain (no query, no
   * trailing slash) and its names decode and pass the rules; it returns
   * false for anything else, which takes the ordinary routes: they answer it
   * the same way and give every invalid path its full answer.
   */
  const plainLookup = (req: IncomingMessage, res: ServerResponse, started: number): boolean => {
    const match = LOOKUP_PATH.exec(req.url ?? '');
    if (!match) return false;
    const [, movieSlug, user, pairSlug] = match;
    const kind: Lookup = movieSlug !== undefined ? 'movie' : pairSlug !== undefined ? 'pair' : 'user';
    const names = (kind === 'movie' ? [movieSlug] : kind === 'user' ? [user] : [user, pairSlug]).map(plainName);
    if (names.includes(undefined)) return false;
    if (pending.length === 0) setImmediate(answerPending);
    pending.push({ req, res, kind, names: names as string[], started });
    return true;
  };

  on('GET', '/users/:user/movies', async (req, res) => {
    const user = nameParam(req, 'user');
    const { limit, offset } = pageParams(req);
    const page = await store.userMovies(user, limit, offset);
    if (!page) throw notFound(nothingFor.user(user));
    sendJson(res, 200, { user, items: page.items, ...pageLinks(req, limit, offset, page.more) });
  });

  on('GET', '/movies', async (req, res) => {
    const { limit, offset } = pageParams(req);
    const page = await store.topMovies(limit, offset);
    sendJson(res, 200, { items: page.items, ...pageLinks(req, limit, offset, page.more) });
  });

  return plainLookup;
}
