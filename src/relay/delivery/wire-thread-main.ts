import { Readable } from 'node:stream';
import { parentPort } from 'node:worker_threads';
import { installFastDotStuffing } from './dot-stuff.ts';
import { localDeferral } from './reply.ts';
import { dialLocal, type LocalWire, type WireLog } from './wire.ts';
import { errorFields, type FromThread, type ToThread } from './wire-protocol.ts';

/**
 * The delivery thread: the upstream SMTP sessions (wire.ts) of every route, off the relay's main
 * thread, which keeps the queue, the pool, the breaker and the client side. It only talks SMTP
 * for the main thread (wire-thread.ts), one request at a time per call number.
 */

const port = parentPort;
if (!port) throw new Error('wire-thread-main.ts runs as a worker thread');
// A thread loads its own nodemailer: without this its sessions dot-stuffed every body with
// nodemailer's per-byte loop (43 % of the thread's time at 100 KB), whatever the main thread had
// installed for itself (relay.ts).
await installFastDotStuffing();

const post = (m: FromThread) => port.postMessage(m);
/** A Buffer arrives as a plain Uint8Array: the same bytes, viewed as a Buffer again. */
const asBuffer = (u: Uint8Array) => Buffer.from(u.buffer, u.byteOffset, u.byteLength);
const wires = new Map<number, LocalWire>();
const aborts = new Map<number, AbortController>();
const bodies = new Map<number, Readable>();
let nextWire = 1;

const log: WireLog = {
  debug: (obj, msg) => post({ op: 'log', level: 'debug', obj, msg }),
  warn: (msg) => post({ op: 'log', level: 'warn', obj: {}, msg }),
};

function controller(call: number): AbortController {
  const c = new AbortController();
  aborts.set(call, c);
  return c;
}

async function dial(call: number, m: Extract<ToThread, { op: 'dial' }>): Promise<void> {
  const c = controller(call);
  try {
    const w = await dialLocal(m.opts, c.signal, log);
    const id = nextWire++;
    wires.set(id, w);
    w.conn.once('end', () => {
      if (wires.delete(id)) post({ op: 'gone', wire: id });
    });
    post({
      op: 'dialed',
      call,
      info: { wire: id, supportsDsn: w.supportsDsn, authenticated: w.authenticated, secure: w.secure },
    });
  } catch (err) {
    post({ op: 'dialed', call, error: errorFields(err) });
  } finally {
    aborts.delete(call);
  }
}

async function send(call: number, m: Extract<ToThread, { op: 'send' }>): Promise<void> {
  const c = controller(call);
  const w = wires.get(m.wire);
  const body = new Readable({
    read() {
      if (m.more) post({ op: 'pull', call });
    },
  });
  for (const chunk of m.chunks) body.push(asBuffer(chunk));
  if (!m.more) body.push(null);
  else bodies.set(call, body);
  try {
    if (!w) throw Object.assign(new Error('upstream session closed'), { code: 'ECONNECTION' });
    const r = await w.send(m.env, body, c.signal);
    post({
      op: 'sent',
      call,
      result: { verdicts: [...r.verdicts], replies: r.replies, untouched: r.untouched, usable: r.usable },
    });
  } catch (err) {
    // LocalWire.send never throws; a missing session is a network failure before any byte left.
    const v = localDeferral(errorFields(err).message);
    post({
      op: 'sent',
      call,
      result: { verdicts: m.env.to.map((a) => [a, v]), replies: [], untouched: true, usable: false },
    });
  } finally {
    aborts.delete(call);
    bodies.delete(call);
  }
}

function chunk(m: Extract<ToThread, { op: 'chunk' }>): void {
  const body = bodies.get(m.call);
  if (!body) return;
  if (m.error !== undefined) body.destroy(Object.assign(new Error(m.error), { code: 'ESTREAM' }));
  else {
    if (m.chunk) body.push(asBuffer(m.chunk));
    if (m.end) body.push(null);
  }
}

port.on('message', (m: ToThread) => {
  switch (m.op) {
    case 'dial':
      void dial(m.call, m);
      break;
    case 'send':
      void send(m.call, m);
      break;
    case 'chunk':
      chunk(m);
      break;
    case 'quit': {
      const w = wires.get(m.wire);
      wires.delete(m.wire);
      void (w ? w.quit() : Promise.resolve()).then(() => post({ op: 'quitted', call: m.call }));
      break;
    }
    case 'abort':
      aborts.get(m.call)?.abort();
      break;
  }
});
