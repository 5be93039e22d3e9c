// Structured logs with pino: JSON lines on stderr for machines, or pino-pretty's
// readable lines when stderr is a terminal. One line at start with the
// settings in force, one a refused or failed request, none an accepted event.
import pino from 'pino';

export type Logger = pino.Logger;
export type LogLevel = pino.LevelWithSilent;

export function createLogger(level: LogLevel = 'info'): Logger {
  if (process.stderr.isTTY) {
    return pino({ level, transport: { target: 'pino-pretty', options: { destination: 2, translateTime: 'SYS:HH:MM:ss.l' } } });
  }
  return pino({ level, base: undefined }, pino.destination({ fd: 2, sync: true }));
}

export const silentLogger: Logger = pino({ level: 'silent' });
