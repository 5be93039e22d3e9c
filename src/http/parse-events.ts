// A request body as candidate events, or every reason it cannot be: JSON (one
// object or an array) or NDJSON (one object a line). What a hostile body can
// cost is bounded before it is parsed: a batch over the limit is refused by
// counting its items, and an answer lists a bounded number of errors.
import { checkEvent, type FieldError } from '../event.ts';
import type { BodyFormat } from './body.ts';
import { badRequest, HttpProblem } from './problem.ts';

/** Errors one answer lists at most; its detail gives the total. */
export const MAX_LISTED_ERRORS = 100;
/** Past this size a JSON array's items are counted before it is parsed: 16 MiB of `{},` would be 5 million objects. */
const COUNT_BEFORE_PARSE_CHARS = 1024 * 1024;

export interface ParsedEvents {
  values: unknown[];
  /** One object rather than a batch: its errors' pointers do not index a batch. */
  single: boolean;
}

/** The problem of a body with errors: the first MAX_LISTED_ERRORS of them, and how many there are in all. */
export function invalid(kind: 'invalid-event' | 'invalid-request', detail: string, errors: FieldError[]): HttpProblem {
  const listed = errors.length > MAX_LISTED_ERRORS ? errors.slice(0, MAX_LISTED_ERRORS) : errors;
  const more = listed.length < errors.length ? ` (the first ${listed.length} of ${errors.length} errors are listed)` : '';
  if (kind === 'invalid-request') return badRequest(detail + more, listed);
  return new HttpProblem(400, 'invalid-event', 'Invalid event', detail + more, { errors: listed });
}

function tooMany(maxEvents: number, count: number, why: string, unit = 'events'): HttpProblem {
  return badRequest(`a batch holds at most ${maxEvents} events${why}; this one has ${count} ${unit}`, [
    { pointer: '', message: `batch must have at most ${maxEvents} events${why}` },
  ]);
}

/**
 * Turns a body into candidate events. `maxEvents` is the largest batch taken
 * (`why` says whose limit it is, for the message); a larger one is refused
 * before its events are built.
 */
export function parseEvents(text: string, format: BodyFormat, maxEvents: number, why = ''): ParsedEvents {
  if (format === 'ndjson') return parseLines(text, maxEvents, why);
  if (text.length > COUNT_BEFORE_PARSE_CHARS) {
    const items = countItems(text, maxEvents + 1);
    if (items > maxEvents) throw tooMany(maxEvents, items, why, 'items or more');
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new HttpProblem(400, 'invalid-body', 'Invalid body', `the body is not valid JSON: ${(error as Error).message}`);
  }
  if (Array.isArray(value)) {
    if (value.length > maxEvents) throw tooMany(maxEvents, value.length, why);
    return { values: value, single: false };
  }
  if (typeof value === 'object' && value !== null) return { values: [value], single: true };
  throw badRequest('the body must be one event object or an array of events', [
    { pointer: '', message: 'body must be an object or an array' },
  ]);
}

/** NDJSON: one event a line, so an event's index is its line number minus one; only a final newline may end it. */
function parseLines(text: string, maxEvents: number, why: string): ParsedEvents {
  let count = 1;
  for (let i = text.indexOf('\n'); i !== -1 && i < text.length - 1; i = text.indexOf('\n', i + 1)) count += 1;
  if (count > maxEvents) throw tooMany(maxEvents, count, why, 'lines');
  const lines = text.split('\n');
  if (lines.length > 1 && lines.at(-1) === '') lines.pop();
  const values: unknown[] = [];
  const errors: FieldError[] = [];
  let unreadable = 0;
  lines.forEach((line, i) => {
    if (line.trim() === '') {
      unreadable += 1;
      errors.push({ pointer: `/${i}`, message: `line ${i + 1} is empty` });
      return;
    }
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch (error) {
      unreadable += 1;
      errors.push({ pointer: `/${i}`, message: `line ${i + 1} is not valid JSON: ${(error as Error).message}` });
      return;
    }
    values.push(value);
    // Once a line is unreadable the request is refused: say too what is wrong with the lines that were read.
    if (unreadable > 0) errors.push(...checkEvent(value, `/${i}`));
  });
  if (unreadable > 0) {
    // The lines read before the first unreadable one were not checked yet.
    const firstBad = Number(errors[0].pointer.slice(1));
    const earlier = values.slice(0, firstBad).flatMap((value, i) => checkEvent(value, `/${i}`));
    throw invalid('invalid-request', `${unreadable} of ${lines.length} lines are not JSON events; nothing was stored`, [...earlier, ...errors]);
  }
  return { values, single: false };
}

/**
 * The items of a JSON array, counted without building them: the commas at
 * its top level, plus one. Stops counting at `stopAt`. Not a validator: a
 * body that is not JSON fails in JSON.parse afterwards.
 */
export function countItems(text: string, stopAt: number): number {
  let depth = 0;
  let inString = false;
  let items = 0;
  let any = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i += 1; // backslash: skip the escaped character
      else if (c === 0x22) inString = false;
      continue;
    }
    if (c === 0x22) {
      inString = true;
      if (depth === 1) any = true;
    } else if (c === 0x5b || c === 0x7b) {
      if (depth === 1) any = true;
      depth += 1;
    } else if (c === 0x5d || c === 0x7d) {
      depth -= 1;
    } else if (depth === 1) {
      if (c === 0x2c) {
        items += 1;
        if (items + 1 >= stopAt) return items + 1;
      } else if (c > 0x20) {
        any = true;
      }
    }
  }
  return any ? items + 1 : items;
}
