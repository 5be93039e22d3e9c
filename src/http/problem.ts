// Every error is answered as application/problem+json (RFC 9457).
import type { ServerResponse } from 'node:http';
import type { FieldError } from '../event.ts';

export interface ProblemOptions {
  errors?: FieldError[];
  headers?: Record<string, string>;
  /** Further members, such as readiness details. */
  extra?: Record<string, unknown>;
}

export class HttpProblem extends Error {
  constructor(
    readonly status: number,
    /** Last part of the type URI, `/problems/<kind>`. */
    readonly kind: string,
    readonly title: string,
    readonly detail: string,
    readonly options: ProblemOptions = {},
  ) {
    // A problem is an answer, not a fault: capturing its stack would cost more than the rest of a 404.
    const limit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    super(detail);
    Error.stackTraceLimit = limit;
  }
}

export function sendJson(res: ServerResponse, status: number, body: unknown, contentType = 'application/json'): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': contentType, 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}

/** What a problem answer says: an HttpProblem, or a plain object where an Error would cost more than the answer. */
export interface Problem {
  status: number;
  kind: string;
  title: string;
  detail: string;
  options?: ProblemOptions;
}

/** `instance` is the request's id, also sent as the X-Request-Id header and written in the log line. */
export function sendProblem(res: ServerResponse, problem: Problem, instance?: string): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const { errors, headers, extra } = problem.options ?? {};
  const body: Record<string, unknown> = {
    type: `/problems/${problem.kind}`,
    title: problem.title,
    status: problem.status,
    detail: problem.detail,
  };
  if (instance !== undefined) body.instance = instance;
  if (extra) Object.assign(body, extra);
  if (errors) body.errors = errors;
  const text = JSON.stringify(body);
  res.writeHead(problem.status, {
    ...headers,
    ...(instance === undefined ? {} : { 'X-Request-Id': instance }),
    'Content-Type': 'application/problem+json',
    'Content-Length': Buffer.byteLength(text),
  });
  res.end(text);
}

export const badRequest = (detail: string, errors?: FieldError[]) =>
  new HttpProblem(400, 'invalid-request', 'Invalid request', detail, { errors });

/** 404 as plain data: a lookup of a name with no events answers it without building an Error. */
export const notFoundProblem = (detail: string): Problem => ({ status: 404, kind: 'not-found', title: 'Not found', detail });

export const notFound = (detail: string) => {
  const { status, kind, title } = notFoundProblem(detail);
  return new HttpProblem(status, kind, title, detail);
};

export const serviceUnavailable = (kind: string, title: string, detail: string, retryAfterSeconds = 1) =>
  new HttpProblem(503, kind, title, detail, { headers: { 'Retry-After': String(retryAfterSeconds) } });
