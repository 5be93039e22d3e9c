// One line a message on stderr: time, level, text.
export type Level = 'info' | 'warn' | 'error';
export type Log = (level: Level, message: string) => void;

export const stderrLog: Log = (level, message) => {
  process.stderr.write(`${new Date().toISOString()} ${level} ${message}\n`);
};

export const silentLog: Log = () => {};
