// A route's parameters, checked: names in the path, integers and pages in the query.
import type { Request } from 'polka';
import { checkName } from '../event.ts';
import { badRequest } from './problem.ts';

const DEFAULT_PAGE = 20;
const MAX_PAGE = 1000;

export function intParam(req: Request, name: string, min: number, max: number, fallback: number): number {
  const raw = req.query[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!/^\d+$/.test(String(raw)) || value < min || value > max) {
    throw badRequest(`invalid query parameter ${name}`, [
      { pointer: `/${name}`, message: `${name} must be an integer from ${min} to ${max}` },
    ]);
  }
  return value;
}

export function nameParam(req: Request, field: 'user' | 'slug'): string {
  const value = req.params[field];
  const errors = checkName(value, field);
  if (errors.length > 0) throw badRequest(`invalid ${field} in the path`, errors);
  return value;
}

/** limit and offset of a paginated list. */
export function pageParams(req: Request): { limit: number; offset: number } {
  return {
    limit: intParam(req, 'limit', 1, MAX_PAGE, DEFAULT_PAGE),
    offset: intParam(req, 'offset', 0, Number.MAX_SAFE_INTEGER, 0),
  };
}

export function pageLinks(req: Request, limit: number, offset: number, more: boolean) {
  return { limit, offset, next: more ? `${req.path}?limit=${limit}&offset=${offset + limit}` : null };
}
