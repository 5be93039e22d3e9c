// What it costs to hand events from an HTTP worker to the writer, and no
// more: a parent (the worker) sends `submit` messages of flattened requests
// to a forked child (the writer) over the same JSON IPC channel node:cluster
// uses; the child unflattens each request and answers the message with one
// `outcomes` message, as the writer answers a batch. Each message is answered
// before the next goes, so every message wakes the other side: the cost
// where turns carry few requests. CPU an event on each side, from
// process.cpuUsage.
//   npx tsx test/load/handoff.ts [--events 200000]
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { ReceivedEvent } from '../../src/store/store.ts';
import { flatten, unflatten, type Outcome, type Submission, type ToWorker, type ToWriter } from '../../src/workers/protocol.ts';

const HERE = fileURLToPath(import.meta.url);
const CHILD_FLAG = '--handoff-writer';

/** What the parent asks of the child besides submits: its CPU time so far. */
type CpuQuestion = { t: 'cpu' };
type CpuAnswer = { t: 'cpu'; usage: NodeJS.CpuUsage };

/** The writer's side: answers each submit with its outcomes, and its CPU time when asked. */
function runWriter() {
  process.on('message', (message: ToWriter | CpuQuestion) => {
    if (message.t === 'cpu') {
      process.send!({ t: 'cpu', usage: process.cpuUsage() } satisfies CpuAnswer);
    } else if (message.t === 'submit') {
      const items: Outcome[] = message.items.map((item) => [item[0], unflatten(item).length, 0]);
      process.send!({ t: 'outcomes', items } satisfies ToWorker);
    }
  });
  // An ES module's listener comes after the channel opens: what was sent before it is lost.
  process.send!({ t: 'ready' } satisfies ToWriter);
  // Ends with the parent: the channel closing is the sign.
  process.on('disconnect', () => process.exit(0));
}

export interface HandoffCase {
  label: string;
  requestsPerMessage: number;
  eventsPerRequest: number;
}

export const HANDOFF_CASES: HandoffCase[] = [
  { label: '1 request of 1 event a message', requestsPerMessage: 1, eventsPerRequest: 1 },
  { label: '16 requests of 1 event a message (a busy turn)', requestsPerMessage: 16, eventsPerRequest: 1 },
  { label: '1 request of 1,000 events a message', requestsPerMessage: 1, eventsPerRequest: 1000 },
];

export interface HandoffFigures extends HandoffCase {
  events: number;
  messages: number;
  /** CPU time an event: the sender's (flatten, send, read the outcomes) and the writer's (read, unflatten, answer). */
  workerUs: number;
  writerUs: number;
  /** Wall-clock time a message, there and back. */
  roundTripUs: number;
}

/** The next message from the child. */
const nextMessage = <T>(child: ChildProcess) => new Promise<T>((resolve) => child.once('message', (m) => resolve(m as T)));

/** Heartbeats as a worker holds them once parsed: 10,000 users over 500 movies. */
function heartbeats(count: number): ReceivedEvent[] {
  const receivedAt = Date.now();
  return Array.from({ length: count }, (_, n) => ({ user: `user-${n % 10_000}`, slug: `movie-${n % 500}`, at: Math.floor(n / 10_000) * 5, receivedAt }));
}

async function measureCase(child: ChildProcess, c: HandoffCase, events: number, pool: ReceivedEvent[]): Promise<HandoffFigures> {
  // The requests' events as a worker holds them once parsed: flattening them is the handoff's, parsing is not.
  const requests = Array.from({ length: pool.length / c.eventsPerRequest }, (_, i) => pool.slice(i * c.eventsPerRequest, (i + 1) * c.eventsPerRequest));
  let request = 0;
  const message = (): ToWriter => {
    const items: Submission[] = [];
    for (let r = 0; r < c.requestsPerMessage; r++, request++) items.push(flatten(request, requests[request % requests.length]));
    return { t: 'submit', items };
  };
  const exchange = async (messages: number) => {
    for (let i = 0; i < messages; i++) {
      const answered = nextMessage<ToWorker>(child);
      child.send(message());
      await answered;
    }
  };
  const writerCpu = async () => {
    const answered = nextMessage<CpuAnswer>(child);
    child.send({ t: 'cpu' } satisfies CpuQuestion);
    return (await answered).usage;
  };
  const messages = Math.ceil(events / (c.requestsPerMessage * c.eventsPerRequest));
  await exchange(Math.ceil(messages / 10)); // warm-up: the JIT settles on both sides
  const writerBefore = await writerCpu();
  const workerBefore = process.cpuUsage();
  const started = performance.now();
  await exchange(messages);
  const elapsedMs = performance.now() - started;
  const worker = process.cpuUsage(workerBefore);
  const writerAfter = await writerCpu();
  const sent = messages * c.requestsPerMessage * c.eventsPerRequest;
  const total = (u: NodeJS.CpuUsage) => u.user + u.system;
  return {
    ...c,
    events: sent,
    messages,
    workerUs: total(worker) / sent,
    writerUs: (total(writerAfter) - total(writerBefore)) / sent,
    roundTripUs: (elapsedMs * 1000) / messages,
  };
}

/** Each case of HANDOFF_CASES with about `events` events, in one child. */
export async function handoffFigures(events = 200_000): Promise<HandoffFigures[]> {
  const child = fork(HERE, [CHILD_FLAG], { serialization: 'json', stdio: 'inherit' });
  try {
    const ready = await nextMessage<ToWriter>(child);
    if (ready.t !== 'ready') throw new Error(`the child said ${JSON.stringify(ready)} first`);
    const pool = heartbeats(10_000);
    const figures: HandoffFigures[] = [];
    for (const c of HANDOFF_CASES) figures.push(await measureCase(child, c, events, pool));
    return figures;
  } finally {
    child.disconnect();
  }
}

export const handoffLines = (figures: HandoffFigures[]) =>
  figures.map(
    (f) =>
      `  ${f.label}: worker ${f.workerUs.toFixed(2)} µs, writer ${f.writerUs.toFixed(2)} µs CPU an event; ` +
      `${f.roundTripUs.toFixed(0)} µs a message there and back (${f.events.toLocaleString('en')} events, ${f.messages.toLocaleString('en')} messages)`,
  );

if (process.argv.includes(CHILD_FLAG)) runWriter();
else if (process.argv[1] === HERE) {
  const i = process.argv.indexOf('--events');
  const figures = await handoffFigures(i > 0 ? Number(process.argv[i + 1]) : undefined);
  console.log(`handing events from a worker to the writer (JSON IPC, each message answered before the next), Node ${process.version}:`);
  for (const line of handoffLines(figures)) console.log(line);
}
