import { createRequire } from 'node:module';
import type { Readable } from 'node:stream';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { Logger } from '../../lib/logger.ts';
import { InMemoryBody } from './body.ts';
import { PASSWORD_ENV, USER_ENV } from './credentials.ts';
import { interruption } from './deadlines.ts';
import { localDeferral, type Verdict } from './reply.ts';
import {
  abortError,
  type TransactionEnvelope,
  type TransactionResult,
  type Wire,
  type WireOptions,
} from './wire.ts';
import type { DialedInfo, FromThread, SentInfo, ToThread } from './wire-protocol.ts';

/**
 * The upstream sessions in a thread of their own (wire-thread-main.ts): talking SMTP to the
 * smarthost (nodemailer's parser, the body's dot-stuffing and socket writes, their garbage) was a
 * quarter of the main thread's time, on the same thread that answers every client. The main
 * thread keeps the queue, the pool, the breaker and the deadlines; an abort is answered here at
 * once and the thread told to drop the session. A thread that dies fails what it had in flight
 * (deferred, never lost: the spool still holds the message) and the next dial starts a new one.
 * EMAIL_RELAY_DELIVERY_THREAD=0 keeps the sessions on the main thread (A/B in the benchmarks).
 */

export const DELIVERY_THREAD = process.env.EMAIL_RELAY_DELIVERY_THREAD !== '0';

const YOUNG_MB = 4;
const OLD_MB = 96;

/** Body bytes sent along with the transaction; the rest the thread pulls chunk by chunk. */
const EAGER_BYTES = 256 * 1024;

/** What a call gets when the thread exits before answering it (the thread itself never sends this). */
type Exited = { op: 'exited' };
type Reply = FromThread | Exited;
type Pending = { resolve: (m: Reply) => void; onPull?: () => void };

export class WireThread {
  private worker: Worker | undefined;
  private nextCall = 1;
  private readonly pending = new Map<number, Pending>();
  /** Live remote sessions by their number in the thread. */
  private readonly wires = new Map<number, RemoteWire>();
  private closed = false;

  constructor(private readonly logger: Logger) {}

  dial(opts: WireOptions, signal: AbortSignal): Promise<Wire> {
    if (this.closed) return Promise.reject(Object.assign(new Error('delivery stopped'), { code: 'EABORT' }));
    signal.throwIfAborted();
    const { call, reply } = this.request({
      op: 'dial',
      call: 0,
      opts: { ...opts, env: credentialEnv(opts.env) },
    });
    return new Promise<Wire>((resolve, reject) => {
      const onAbort = () => {
        this.forget(call, (late) => {
          // Dialed after all, but nobody waits for it any more.
          if (late.op === 'dialed' && late.info)
            this.post({ op: 'quit', call: this.nextCall++, wire: late.info.wire });
        });
        reject(abortError(signal));
      };
      signal.addEventListener('abort', onAbort, { once: true });
      reply.then((m) => {
        signal.removeEventListener('abort', onAbort);
        if (m.op === 'exited')
          return reject(Object.assign(new Error('delivery thread exited'), { code: 'ECONNECTION' }));
        if (m.op !== 'dialed') return reject(new Error(`delivery thread: unexpected ${m.op}`));
        if (m.error) return reject(Object.assign(new Error(m.error.message), m.error));
        const w = new RemoteWire(this, m.info!);
        this.wires.set(m.info!.wire, w);
        resolve(w);
      });
    });
  }

  /** Ends the thread once its sessions are closed (the pools quit them first). */
  async close(): Promise<void> {
    this.closed = true;
    const w = this.worker;
    this.worker = undefined;
    if (w) await w.terminate();
  }

  /** Ends the thread as a crash would (tests): what it had in flight fails, the next dial starts another. */
  async crash(): Promise<void> {
    await this.worker?.terminate();
  }

  /** @internal RemoteWire's transaction. */
  async send(
    wire: RemoteWire,
    env: TransactionEnvelope,
    body: Readable,
    signal: AbortSignal,
  ): Promise<TransactionResult & { usable: boolean }> {
    // Whether bytes left is not known here: never untouched, so no second try on another session.
    const failed = (
      v: Verdict,
      untouched = false,
      usable = false,
    ): TransactionResult & { usable: boolean } => ({
      verdicts: new Map(env.to.map((a) => [a, v])),
      replies: [],
      untouched,
      usable,
    });
    const aborted = () => {
      const why = interruption(signal);
      return failed(localDeferral(why.text, why.status));
    };
    if (signal.aborted) return aborted();
    let eager: Eager;
    try {
      eager = await readEager(body);
    } catch (err) {
      body.destroy();
      // Nothing left yet: the session is fine and the message may go out later.
      return failed(localDeferral(`cannot read queued message: ${(err as Error).message}`), true, true);
    }
    const { chunks, it } = eager;
    const { call, reply } = this.request(
      { op: 'send', call: 0, wire: wire.info.wire, env, chunks, more: !!it },
      it
        ? () => {
            it.next().then(
              (r) => {
                if (r.done) this.post({ op: 'chunk', call, end: true });
                else this.post({ op: 'chunk', call, chunk: toBuffer(r.value) });
              },
              (err: Error) => this.post({ op: 'chunk', call, error: err.message }),
            );
          }
        : undefined,
    );
    return new Promise((resolve) => {
      const onAbort = () => {
        this.forget(call);
        body.destroy();
        resolve(aborted());
      };
      signal.addEventListener('abort', onAbort, { once: true });
      reply.then((m) => {
        signal.removeEventListener('abort', onAbort);
        body.destroy();
        resolve(
          m.op === 'sent'
            ? fromSent(m.result)
            : failed(localDeferral('delivery thread exited during the transaction')),
        );
      });
    });
  }

  /** @internal */
  quit(wire: RemoteWire): Promise<void> {
    if (!this.wires.delete(wire.info.wire) || !this.worker) return Promise.resolve();
    return this.request({ op: 'quit', call: 0, wire: wire.info.wire }).reply.then(() => undefined);
  }

  private request(
    m: ToThread & { call: number },
    onPull?: () => void,
  ): { call: number; reply: Promise<Reply> } {
    const call = this.nextCall++;
    const reply = new Promise<Reply>((resolve) =>
      this.pending.set(call, { resolve, ...(onPull ? { onPull } : {}) }),
    );
    this.post({ ...m, call } as ToThread);
    return { call, reply };
  }

  /** Nobody waits for this call's reply any more; the thread drops what it does for it. */
  private forget(call: number, late?: (m: Reply) => void): void {
    this.pending.set(call, { resolve: late ?? (() => {}) });
    this.post({ op: 'abort', call });
  }

  private post(m: ToThread): void {
    this.thread().postMessage(m);
  }

  private thread(): Worker {
    if (this.worker) return this.worker;
    const ts = import.meta.url.endsWith('.ts');
    const entry = new URL(ts ? './wire-thread-main.ts' : './wire-thread-main.js', import.meta.url);
    // Under tsx (tests, bench --relay-entry tsx) the thread needs the TypeScript loader too.
    // A heap of its own, small: the sessions and the bodies in flight (at most 256 KiB each sent
    // eagerly). A small young generation keeps the thread's RSS low next to a big queue; a thread
    // that runs out of heap exits, and what it had in flight is deferred (below).
    const resourceLimits = { maxYoungGenerationSizeMb: YOUNG_MB, maxOldGenerationSizeMb: OLD_MB };
    const w = ts
      ? new Worker(tsxBoot(entry), { eval: true, resourceLimits })
      : new Worker(entry, { resourceLimits });
    w.unref();
    w.on('message', (m: FromThread) => this.onMessage(m));
    w.on('error', (err) => this.logger.error({ err }, 'delivery thread failed: its sessions are dropped'));
    w.on('exit', () => {
      if (this.worker !== w) return;
      this.worker = undefined;
      // What was in flight there is lost with it: deferred (the spool keeps the mail).
      const failed = [...this.pending.values()];
      this.pending.clear();
      for (const r of this.wires.values()) r.alive = false;
      this.wires.clear();
      for (const p of failed) p.resolve({ op: 'exited' });
    });
    this.worker = w;
    return w;
  }

  private onMessage(m: FromThread): void {
    switch (m.op) {
      case 'log':
        if (m.level === 'warn') this.logger.warn(m.obj, m.msg);
        else this.logger.debug(m.obj, m.msg);
        return;
      case 'gone': {
        const w = this.wires.get(m.wire);
        if (w) w.alive = false;
        this.wires.delete(m.wire);
        return;
      }
      case 'pull':
        this.pending.get(m.call)?.onPull?.();
        return;
      default: {
        const p = this.pending.get(m.call);
        this.pending.delete(m.call);
        p?.resolve(m);
      }
    }
  }
}

/** A session whose socket lives in the delivery thread. */
class RemoteWire implements Wire {
  alive = true;
  readonly supportsDsn: boolean;
  readonly authenticated: boolean;
  readonly secure: boolean;

  constructor(
    private readonly thread: WireThread,
    readonly info: DialedInfo,
  ) {
    this.supportsDsn = info.supportsDsn;
    this.authenticated = info.authenticated;
    this.secure = info.secure;
  }

  send(env: TransactionEnvelope, body: Readable, signal: AbortSignal) {
    return this.thread.send(this, env, body, signal);
  }

  quit(): Promise<void> {
    this.alive = false;
    return this.thread.quit(this);
  }
}

const toBuffer = (v: Buffer | string): Buffer => (typeof v === 'string' ? Buffer.from(v) : v);

/** The body's first bytes, sent with the transaction; `it` reads the rest, if there is more. */
interface Eager {
  chunks: Buffer[];
  it?: AsyncIterator<Buffer | string>;
}

async function readEager(body: Readable): Promise<Eager> {
  if (body instanceof InMemoryBody && body.bytes <= EAGER_BYTES) return { chunks: [...body.pieces] };
  const it = body[Symbol.asyncIterator]() as AsyncIterator<Buffer | string>;
  const chunks: Buffer[] = [];
  let bytes = 0;
  while (bytes < EAGER_BYTES) {
    const r = await it.next();
    if (r.done) return { chunks };
    const b = toBuffer(r.value);
    chunks.push(b);
    bytes += b.length;
  }
  return { chunks, it };
}

function fromSent(r: SentInfo): TransactionResult & { usable: boolean } {
  return {
    verdicts: new Map<string, Verdict>(r.verdicts),
    replies: r.replies,
    untouched: r.untouched,
    usable: r.usable,
  };
}

/**
 * The thread's first code under tsx: its TypeScript loader, then the entry. tsx is resolved from
 * this module, not the thread's working directory (the bench runs the relay in a temp dir).
 */
function tsxBoot(entry: URL): string {
  const api = pathToFileURL(
    createRequire(import.meta.url)
      .resolve('tsx/esm/api')
      .replace(/\.cjs$/, '.mjs'),
  );
  return `import(${JSON.stringify(api.href)}).then((t) => { t.register(); return import(${JSON.stringify(entry.href)}); });`;
}

/** Only the credentials' variables cross to the thread (credentials.ts reads them per session). */
function credentialEnv(env: NodeJS.ProcessEnv | undefined): NodeJS.ProcessEnv {
  const from = env ?? process.env;
  const out: NodeJS.ProcessEnv = {};
  for (const k of [USER_ENV, PASSWORD_ENV]) if (from[k] !== undefined) out[k] = from[k];
  return out;
}
