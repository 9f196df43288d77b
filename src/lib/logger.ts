import pino, { type Logger } from 'pino';

export type { Logger };

/** One JSON line per event on stdout: what log collectors on Kubernetes expect. */
export function createLogger(level: string = process.env.LOG_LEVEL ?? 'info'): Logger {
  return pino({ level, base: undefined, timestamp: pino.stdTimeFunctions.isoTime });
}

/** A logger that drops everything, for tests and library use. */
export const silentLogger: Logger = pino({ level: 'silent' });
