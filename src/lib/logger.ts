import pino, { type Logger } from 'pino';
import { type AddressRedaction, addressRedactor, redactValue } from './redact.ts';

export type { Logger };

export interface LoggerOptions {
  /** Mask or hash mail addresses in every log line (fields and message); default plain. */
  addresses?: AddressRedaction;
  /** Key of `hash` (EMAIL_RELAY_LOG_HASH_KEY): without it, a known address can be hashed and matched. */
  hashKey?: string;
  /**
   * Write each line to stdout with a synchronous write(2) on the calling thread. pino's default
   * is asynchronous: every line an fs.write on libuv's thread pool (a worker wake-up, an eventfd
   * back, one more event-loop turn), sharing those four threads with the spool's fdatasync. On
   * Linux Node writes stdout pipes synchronously anyway (console.log does).
   */
  sync?: boolean;
}

/** One JSON line per event on stdout: what log collectors on Kubernetes expect. */
export function createLogger(
  level: string = process.env.LOG_LEVEL ?? 'info',
  opts: LoggerOptions = {},
  destination?: pino.DestinationStream,
): Logger {
  const mode = opts.addresses ?? 'plain';
  const redact = addressRedactor(mode, opts.hashKey ?? process.env['EMAIL_RELAY_LOG_HASH_KEY'] ?? '');
  const options: pino.LoggerOptions = {
    level,
    base: undefined,
    timestamp: pino.stdTimeFunctions.isoTime,
    // Only when asked: plain logging pays nothing for the option.
    ...(mode === 'plain'
      ? {}
      : {
          hooks: {
            logMethod(args, method) {
              const redacted = args.map((a) => redactValue(a, redact)) as Parameters<typeof method>;
              method.apply(this, redacted);
            },
          },
        }),
  };
  if (destination) return pino(options, destination);
  return opts.sync ? pino(options, turnBatched(pino.destination({ dest: 1, sync: true }))) : pino(options);
}

/**
 * The lines logged in one turn of the event loop, written with one write at its end
 * (setImmediate) rather than one write(2) each: at 20 sessions a turn often logs several lines,
 * and each write to a file cost 25-35 µs of the relay's only thread. Still written before the
 * loop waits for I/O again, and flushed at exit; a SIGKILL loses at most the current turn's lines.
 */
export function turnBatched(dest: { write(s: string): unknown }): pino.DestinationStream {
  let pending = '';
  let scheduled = false;
  const flush = () => {
    scheduled = false;
    if (!pending) return;
    const s = pending;
    pending = '';
    dest.write(s);
  };
  process.once('exit', flush);
  return {
    write(line: string) {
      pending += line;
      if (!scheduled) {
        scheduled = true;
        setImmediate(flush);
      }
    },
  };
}

/** A logger that drops everything, for tests and library use. */
export const silentLogger: Logger = pino({ level: 'silent' });
