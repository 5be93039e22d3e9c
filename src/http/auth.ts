// Optional bearer tokens for ingest and for reads (SPEC section 3).
import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { HttpProblem } from './problem.ts';

/** A check that throws 401 unless the request carries `Bearer <token>`; none when token is unset. */
export function bearerCheck(token: string | undefined, what: string): ((req: IncomingMessage) => void) | undefined {
  if (!token) return undefined;
  // Hashing first gives equal lengths, so the comparison takes the same time whatever is sent.
  const expected = createHash('sha256').update(token).digest();
  return (req) => {
    const header = req.headers.authorization ?? '';
    const match = /^Bearer +(.+)$/i.exec(header);
    const given = createHash('sha256').update(match ? match[1].trim() : '').digest();
    if (!match || !timingSafeEqual(given, expected)) {
      throw new HttpProblem(401, 'unauthorized', 'Unauthorized', `${what} needs the header Authorization: Bearer <token>`, {
        headers: { 'WWW-Authenticate': 'Bearer' },
      });
    }
  };
}
