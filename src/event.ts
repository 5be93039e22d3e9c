// The watch-progress event and the rules it must follow (SPEC section 1).
// The same schemas validate requests and, later, describe the API.
import Type, { type Static } from 'typebox';
import { Compile } from 'typebox/compile';

export const MAX_NAME_LENGTH = 200;
export const MAX_AT = 2147483647;
export const MAX_BATCH_EVENTS = 10_000;

// No C0/C1 control characters and no unpaired surrogates (which could not be
// stored byte for byte). Written so that it means the same with or without
// the regular expression `u` flag.
const NAME_PATTERN =
  '^(?:[^\\u0000-\\u001f\\u007f-\\u009f\\ud800-\\udfff]|[\\ud800-\\udbff][\\udc00-\\udfff])*$';

const nameRule = (description: string) =>
  Type.String({ minLength: 1, maxLength: MAX_NAME_LENGTH, pattern: NAME_PATTERN, description });

export const UserName = nameRule('The user, compared byte for byte.');
export const MovieSlug = nameRule('The show or movie, compared byte for byte.');

export const WatchEvent = Type.Object({
  user: UserName,
  slug: MovieSlug,
  at: Type.Integer({
    minimum: 0,
    maximum: MAX_AT,
    description: "Whole seconds from the start of the show where the user's player is now.",
  }),
  id: Type.Optional(
    Type.String({
      minLength: 1,
      maxLength: MAX_NAME_LENGTH,
      description: 'Client event id: an event whose id was already stored is acknowledged as a duplicate and not applied again.',
    }),
  ),
});

export type WatchEvent = Static<typeof WatchEvent>;

/** One problem with one part of a request, as RFC 9457 `errors` entries. */
export interface FieldError {
  pointer: string;
  message: string;
}

const eventValidator = Compile(WatchEvent);
const nameValidator = Compile(UserName);

const TYPE_NAMES: Record<string, string> = {
  string: 'a string',
  integer: 'an integer (whole seconds)',
  object: 'an object',
};

interface SchemaError {
  keyword: string;
  instancePath: string;
  params: Record<string, unknown>;
  message: string;
}

// TypeBox says "must not have fewer than 1 characters"; say the rule in the
// field's own words instead. One `required` error names every missing
// property: each is a problem of its own.
function describe(error: SchemaError): { path: string; rule: string }[] {
  const { keyword, params } = error;
  const at = (rule: string) => [{ path: error.instancePath, rule }];
  switch (keyword) {
    case 'required':
      return (params.requiredProperties as string[]).map((missing) => ({
        path: `${error.instancePath}/${missing}`,
        rule: 'is required',
      }));
    case 'type':
      return at(`must be ${TYPE_NAMES[params.type as string] ?? params.type}`);
    case 'minLength':
      return at(`must be at least ${params.limit} character${params.limit === 1 ? '' : 's'} long`);
    case 'maxLength':
      return at(`must be at most ${params.limit} characters long`);
    case 'pattern':
      return at('must not contain control characters or unpaired surrogates');
    case 'minimum':
      return at(`must be at least ${params.limit}`);
    case 'maximum':
      return at(`must be at most ${params.limit}`);
    default:
      return at(error.message);
  }
}

function toFieldErrors(errors: Iterable<SchemaError>, prefix: string, rootName: string): FieldError[] {
  const out: FieldError[] = [];
  for (const error of errors) {
    for (const { path, rule } of describe(error)) {
      // "at must be an integer": the message names the field, the pointer locates it.
      const field = path.split('/').pop() || rootName;
      out.push({ pointer: prefix + path, message: `${field} ${rule}` });
    }
  }
  return out;
}

/** The problems of one candidate event; empty when it is valid. */
export function checkEvent(value: unknown, pointer = ''): FieldError[] {
  if (eventValidator.Check(value)) return [];
  return toFieldErrors(eventValidator.Errors(value) as Iterable<SchemaError>, pointer, 'event');
}

/** Checks a user or slug taken from a URL path. */
export function checkName(value: string, field: 'user' | 'slug'): FieldError[] {
  if (nameValidator.Check(value)) return [];
  return toFieldErrors(nameValidator.Errors(value) as Iterable<SchemaError>, `/${field}`, field);
}

/**
 * Validates a whole request's events: all of them, or every problem with the
 * number of invalid events. Pointers index the batch unless it is `single`.
 */
export function validateBatch(
  values: unknown[],
  single = false,
): { events: WatchEvent[] } | { errors: FieldError[]; invalid: number } {
  const errors: FieldError[] = [];
  let invalid = 0;
  for (let i = 0; i < values.length; i++) {
    const found = checkEvent(values[i], single ? '' : `/${i}`);
    if (found.length > 0) invalid += 1;
    errors.push(...found);
  }
  if (errors.length > 0) return { errors, invalid };
  return { events: values as WatchEvent[] };
}
