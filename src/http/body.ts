// Reads a request body up to a byte limit. Unlike a general body parser it
// stops at the limit instead of reading on, never guesses a content type,
// and bounds the bytes of all bodies being read at once, not only each one.
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import { createGunzip, type Gunzip } from 'node:zlib';
import { HttpProblem, serviceUnavailable } from './problem.ts';

export type BodyFormat = 'json' | 'ndjson';

const FORMATS = new Map<string, BodyFormat>([
  ['application/json', 'json'],
  ['application/x-ndjson', 'ndjson'],
  ['application/ndjson', 'ndjson'],
]);

/**
 * The body format from Content-Type. No Content-Type at all is JSON: some
 * HTTP clients post JSON without one, and the event source's client is not
 * known. A type that is present and is not JSON or NDJSON in UTF-8 is 415.
 */
export function bodyFormat(req: IncomingMessage): BodyFormat {
  const header = req.headers['content-type'];
  // The common case first: splitting out parameters costs a few percent of a single-event POST.
  if (header === undefined || header === 'application/json') return 'json';
  const { mediaType, utf8 } = contentType(header);
  const format = FORMATS.get(mediaType);
  if (format === undefined || !utf8) {
    throw new HttpProblem(
      415,
      'unsupported-media-type',
      'Unsupported media type',
      `Content-Type must be application/json or application/x-ndjson in UTF-8, not ${JSON.stringify(header)}`,
      { headers: { 'Accept-Post': 'application/json, application/x-ndjson' } },
    );
  }
  return format;
}

/** A Content-Type header's media type, lower case, and whether its charset, if it names one, is UTF-8. */
export function contentType(header: string): { mediaType: string; utf8: boolean } {
  const [mediaType, ...params] = header.split(';').map((part) => part.trim().toLowerCase());
  const charset = params.find((p) => p.startsWith('charset='))?.slice('charset='.length).replace(/"/g, '');
  return { mediaType, utf8: charset === undefined || charset === 'utf-8' || charset === 'utf8' };
}

/**
 * The request ended before its body did, with nobody to answer: the client
 * went away (499, nginx's "client closed request"), or it was too slow and
 * Node's request timeout answered 408 itself.
 */
export class ClientGoneError extends Error {
  constructor(
    message: string,
    readonly status: 408 | 499,
  ) {
    super(message);
  }
}

/**
 * The bytes of the bodies being read at once, against a bound. A body holds
 * the bytes it has received (decoded, for gzip), not what it declares: a
 * connection that declares 16 MiB and sends nothing holds nothing, so a few
 * idle ones cannot shut ingest out.
 */
export class BodyBudget {
  private used = 0;

  constructor(readonly capacity: number) {}

  /** Holds `bytes` more, or returns false and holds nothing when that would pass the bound. */
  take(bytes: number): boolean {
    if (this.used + bytes > this.capacity) return false;
    this.used += bytes;
    return true;
  }

  give(bytes: number): void {
    this.used -= bytes;
  }

  get full(): boolean {
    return this.used >= this.capacity;
  }
}

export interface BodyLimits {
  /** Largest body, in bytes, after decoding. */
  maxBytes: number;
  budget: BodyBudget;
}

const tooLarge = (limit: number) =>
  new HttpProblem(413, 'body-too-large', 'Body too large', `the body must be at most ${limit} bytes (after decoding)`);

const tooBusy = (budget: BodyBudget) =>
  serviceUnavailable(
    'busy-reading',
    'Busy reading other bodies',
    `the request bodies being read at once may hold ${budget.capacity} bytes, and that is taken; nothing was read or stored`,
  );

/** Content-Encoding, as a decoder to put between the socket and the body; none for identity. */
function decoderFor(req: IncomingMessage): Gunzip | undefined {
  const coding = req.headers['content-encoding'];
  if (coding === undefined) return undefined;
  const name = coding.trim().toLowerCase();
  if (name === 'identity' || name === '') return undefined;
  if (name === 'gzip' || name === 'x-gzip') return createGunzip();
  throw new HttpProblem(
    415,
    'unsupported-media-type',
    'Unsupported media type',
    `Content-Encoding must be gzip or identity, not ${JSON.stringify(coding)}`,
    { headers: { 'Accept-Encoding': 'gzip, identity' } },
  );
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * The body as text: 413 as soon as it passes `maxBytes` (decoded), 503 when
 * the bodies being read at once would pass the budget, 400 if it is not
 * UTF-8 or not gzip as it says. A refused body is discarded as it arrives
 * (discardRest), so that the client can read its answer.
 */
export function readBody(req: IncomingMessage, { maxBytes, budget }: BodyLimits): Promise<string> {
  const declared = Number(req.headers['content-length']);
  const decoder = decoderFor(req);
  if (declared > maxBytes) return refuse(req, tooLarge(maxBytes));
  if (budget.full) return refuse(req, tooBusy(budget));

  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    // The bytes kept, all held in the budget.
    let size = 0;
    let settled = false;
    const settle = (error: Error | undefined, text?: string) => {
      if (settled) return;
      settled = true;
      req.off('data', onRaw);
      req.off('end', onRawEnd);
      req.off('error', onGone);
      req.off('close', onGone);
      budget.give(size);
      decoder?.destroy();
      if (error === undefined) return resolve(text!);
      if (!(error instanceof ClientGoneError)) discardRest(req);
      reject(error);
    };
    const onChunk = (chunk: Buffer) => {
      if (size + chunk.length > maxBytes) return settle(tooLarge(maxBytes));
      if (!budget.take(chunk.length)) return settle(tooBusy(budget));
      size += chunk.length;
      chunks.push(chunk);
    };
    const onEnd = () => {
      let text: string;
      try {
        text = utf8.decode(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, size));
      } catch {
        return settle(new HttpProblem(400, 'invalid-body', 'Invalid body', 'the body is not valid UTF-8'));
      }
      settle(undefined, text);
    };
    // A client that goes away mid-body: nothing to answer, but nothing left waiting either.
    const onGone = () => {
      const timedOut = (req.socket as { errored?: { code?: string } | null }).errored?.code === 'ERR_HTTP_REQUEST_TIMEOUT';
      settle(
        timedOut
          ? new ClientGoneError('the body did not arrive within the request timeout; Node answered 408', 408)
          : new ClientGoneError('the client closed the connection before the end of its body', 499),
      );
    };
    const onRaw = decoder ? (chunk: Buffer) => void decoder.write(chunk) : onChunk;
    // With the whole body received, only the decoder can fail: a client that leaves now has sent everything.
    const onRawEnd = decoder
      ? () => {
          req.off('error', onGone);
          req.off('close', onGone);
          decoder.end();
        }
      : onEnd;
    if (decoder) {
      decoder.on('data', onChunk);
      decoder.on('end', onEnd);
      decoder.on('error', (error) =>
        settle(new HttpProblem(400, 'invalid-body', 'Invalid body', `the body is not valid gzip: ${error.message}`)),
      );
    }
    req.on('data', onRaw);
    req.on('end', onRawEnd);
    req.on('error', onGone);
    req.on('close', onGone);
  });
}

function refuse(req: IncomingMessage, problem: HttpProblem): Promise<never> {
  discardRest(req);
  return Promise.reject(problem);
}

/**
 * What a refused body may still send, read and dropped after the answer
 * (nginx's lingering close): closing with unread bytes makes the kernel
 * reset the connection, and the client often loses the answer with it. A
 * client that sends more than this, or for longer, is cut off.
 */
export const LINGER = { bytes: 128 * 1024 * 1024, ms: 5_000 };

/**
 * Reads and drops the rest of a body nobody will read, within LINGER, then
 * leaves the connection to keep-alive. Does nothing for a body already read
 * or being read.
 */
export function discardRest(req: IncomingMessage): void {
  if (req.complete || req.readableEnded || req.listenerCount('data') > 0) return;
  const socket = req.socket as Socket & { destroySoon(): void };
  let bytes = 0;
  const cutOff = () => socket.destroy();
  const timer = setTimeout(cutOff, LINGER.ms).unref();
  const stop = () => clearTimeout(timer);
  // When the answer is the connection's last (the client sent Connection: close), Node closes both ways
  // once it is written: close only ours, as RFC 9112 section 9.6 has it, and read on until the body ends.
  // Only for this body: the connection's later requests close as usual.
  socket.destroySoon = () => socket.end();
  const restore = () => delete (socket as { destroySoon?: unknown }).destroySoon;
  req.on('data', (chunk: Buffer) => {
    bytes += chunk.length;
    if (bytes > LINGER.bytes) {
      stop();
      cutOff();
    }
  });
  req.once('end', () => {
    stop();
    restore();
    if (socket.writableEnded) socket.destroy();
  });
  req.once('close', stop);
  req.resume();
}
