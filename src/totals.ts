// What the service knows of a movie, a user and a pair: the shapes of their
// totals, as TypeBox schemas. The store answers them and the API publishes
// them (http/schemas.ts); both depend on this, and it on neither.
import Type, { type Static } from 'typebox';
import { MovieSlug, UserName } from './event.ts';

export const count = (description: string) => Type.Integer({ minimum: 0, description });
const updatedAt = Type.String({ format: 'date-time', description: 'When the latest event of these totals was received (UTC).' });

export const MovieTotals = Type.Object({
  slug: MovieSlug,
  watchTime: count('Seconds watched, all users together.'),
  viewers: count('Users with at least one event for the movie.'),
  events: count('Events applied.'),
  updatedAt,
}, { additionalProperties: false });

export const UserTotals = Type.Object({
  user: UserName,
  watchTime: count('Seconds watched, all movies together.'),
  movies: count('Movies with at least one event from the user.'),
  events: count('Events applied.'),
  updatedAt,
}, { additionalProperties: false });

const userMovieFields = {
  slug: MovieSlug,
  latestMoment: count('The `at` of the pair\'s latest event: where to resume.'),
  watchTime: count('Seconds of the movie the user watched.'),
  events: count('Events applied.'),
  updatedAt,
};
export const UserMovie = Type.Object(userMovieFields, { additionalProperties: false });
export const PairTotals = Type.Object({ user: UserName, ...userMovieFields }, { additionalProperties: false });

export type MovieTotals = Static<typeof MovieTotals>;
export type UserTotals = Static<typeof UserTotals>;
export type UserMovie = Static<typeof UserMovie>;
export type PairTotals = Static<typeof PairTotals>;
