// The id of a problem answer: the client's own when usable, else one of ours.
import type { IncomingMessage } from 'node:http';

const bootId = Math.random().toString(36).slice(2, 8);
let requestCount = 0;

/**
 * A problem answer's request id: the client's X-Request-Id when it sends a
 * usable one (letters, digits, `.`, `_`, `-`, at most 128), so that its logs
 * and ours meet; else one of ours. Made only for problems: an answer that
 * succeeds pays nothing for it.
 */
export function requestId(req: IncomingMessage): string {
  const given = rawHeader(req, 'x-request-id');
  return given !== undefined && /^[\w.-]{1,128}$/.test(given) ? given : nextRequestId();
}

/** A header's first value, from the raw list: req.headers would build an object of them all. */
function rawHeader(req: IncomingMessage, lowerCaseName: string): string | undefined {
  const raw = req.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) {
    if (raw[i].length === lowerCaseName.length && raw[i].toLowerCase() === lowerCaseName) return raw[i + 1];
  }
  return undefined;
}

function nextRequestId(): string {
  requestCount += 1;
  return `${bootId}-${requestCount.toString(36)}`;
}
