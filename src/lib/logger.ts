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
  return opts.sync ? pino(options, batchedLines(pino.destination({ dest: 1, sync: true }))) : pino(options);
}

/** How long a logged line may wait for others to share its write. */
export const LOG_WINDOW_MS = 20;
/** Written at once past this much (a burst of warnings, say). */
const LOG_WINDOW_BYTES = 64 * 1024;

/**
 * The lines logged within LOG_WINDOW_MS, written with one write rather than one write(2) each:
 * every write to a file or pipe cost the relay's main thread 20-35 µs, and one message logs two
 * lines (queued, delivered) a few milliseconds apart, which a single event-loop turn never
 * joined at one client. Flushed at exit (process.exit, an uncaught error); a SIGKILL loses at
 * most the last window's lines.
 */
export function batchedLines(dest: { write(s: string): unknown }): pino.DestinationStream {
  let pending = '';
  let timer: NodeJS.Timeout | undefined;
  const flush = () => {
    clearTimeout(timer);
    timer = undefined;
    if (!pending) return;
    const s = pending;
    pending = '';
    dest.write(s);
  };
  process.once('exit', flush);
  return {
    write(line: string) {
      pending += line;
      if (pending.length >= LOG_WINDOW_BYTES) flush();
      else if (!timer) {
        timer = setTimeout(flush, LOG_WINDOW_MS);
        timer.unref(); // the exit handler writes what is left
      }
    },
  };
}

/** A logger that drops everything, for tests and library use. */
export const silentLogger: Logger = pino({ level: 'silent' });
