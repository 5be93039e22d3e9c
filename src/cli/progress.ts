// Progress of a long command on stderr: a cli-progress bar on a terminal;
// elsewhere, or with --json, a plain line every few seconds, which a log
// keeps and a terminal bar would garble.
import cliProgress from 'cli-progress';

export interface Progress {
  update(value: number, fields?: Record<string, string | number>): void;
  stop(): void;
}

const LINE_EVERY_MS = 5_000;

/**
 * `bar` is cli-progress's format ({bar}, {value}, {total} and the fields);
 * `line` writes the same as one plain line.
 */
export function startProgress(options: {
  total: number;
  json?: boolean;
  bar: string;
  line: (value: number, total: number, fields: Record<string, string | number>) => string;
}): Progress {
  let fields: Record<string, string | number> = {};
  if (process.stderr.isTTY && !options.json) {
    const bar = new cliProgress.SingleBar({ stream: process.stderr, format: options.bar }, cliProgress.Presets.shades_classic);
    bar.start(options.total, 0, fields);
    return {
      update: (value, more = {}) => bar.update(value, (fields = { ...fields, ...more })),
      stop: () => bar.stop(),
    };
  }
  let value = 0;
  let total = options.total;
  const write = () => process.stderr.write(`${options.line(value, total, fields)}\n`);
  // Unref'd: a command that fails before stop() must still exit.
  const timer = setInterval(write, LINE_EVERY_MS).unref();
  return {
    update: (v, more = {}) => {
      value = v;
      fields = { ...fields, ...more };
      total = Math.max(total, v);
    },
    stop: () => {
      clearInterval(timer);
      write();
    },
  };
}
