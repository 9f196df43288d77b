import { createRequire } from 'node:module';
import { createServer, type Socket } from 'node:net';
import { Readable } from 'node:stream';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import pino from 'pino';
import { SMTPServer } from 'smtp-server';
import { afterEach, describe, expect, it } from 'vitest';
import { configSchema } from '../../../src/config/schema.ts';
import { InMemoryBody } from '../../../src/relay/delivery/body.ts';
import { AttemptDeadline } from '../../../src/relay/delivery/deadlines.ts';
import { parseUpstreamUrl } from '../../../src/relay/delivery/upstream-url.ts';
import { dialLocal, type WireOptions } from '../../../src/relay/delivery/wire.ts';
import { errorFields } from '../../../src/relay/delivery/wire-protocol.ts';
import { WireThread } from '../../../src/relay/delivery/wire-thread.ts';

// The upstream sessions in the delivery thread (wire-thread.ts), against a real SMTP server:
// what arrives, an abort answered at once, and a thread that dies.

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

interface Upstream {
  port: number;
  received: Buffer[];
  /** Holds the reply to DATA until released. */
  hold: boolean;
  release: Array<() => void>;
}

async function upstream(): Promise<Upstream> {
  const up: Upstream = { port: 0, received: [], hold: false, release: [] };
  const server = new SMTPServer({
    logger: false,
    disabledCommands: ['AUTH', 'STARTTLS'],
    disableReverseLookup: true,
    onData(stream, _s, cb) {
      const parts: Buffer[] = [];
      stream.on('data', (b: Buffer) => parts.push(b));
      stream.on('end', () => {
        up.received.push(Buffer.concat(parts));
        if (up.hold) up.release.push(() => cb());
        else cb();
      });
    },
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  up.port = (server.server.address() as { port: number }).port;
  cleanups.push(() => new Promise<void>((r) => server.close(() => r())));
  return up;
}

function thread(): WireThread {
  const t = new WireThread(pino({ level: 'silent' }));
  cleanups.push(() => t.close());
  return t;
}

const opts = (port: number): WireOptions => ({
  target: parseUpstreamUrl(`smtp://127.0.0.1:${port}`),
  hostname: 'relay.example.com',
  upstream: configSchema.parse({ upstream: { url: `smtp://127.0.0.1:${port}` } }).upstream,
  env: {},
});

const env = (size: number) => ({ from: 'a@example.com', to: ['b@example.net'], size, eightBit: false });
const bodyOf = (...chunks: Buffer[]) => Readable.from(chunks);

describe('delivery thread', () => {
  it('sends small and large bodies from the thread, byte for byte (dot-stuffed on the wire, unstuffed by the server)', async () => {
    const up = await upstream();
    const t = thread();
    const wire = await t.dial(opts(up.port), new AbortController().signal);
    expect(wire.alive).toBe(true);
    const small = Buffer.from('Subject: s\r\n\r\n.leading dot\r\nend\r\n');
    const r1 = await wire.send(env(small.length), bodyOf(small), new AbortController().signal);
    expect([...r1.verdicts.values()].map((v) => v.outcome)).toEqual(['sent']);
    expect(r1.usable).toBe(true);
    // over 256 KiB, in several chunks: the thread pulls what was not sent eagerly
    const line = Buffer.from(`${'x'.repeat(98)}\r\n`);
    const chunks = Array.from({ length: 40 }, () => Buffer.concat(Array.from({ length: 100 }, () => line)));
    const big = Buffer.concat(chunks);
    const r2 = await wire.send(env(big.length), bodyOf(...chunks), new AbortController().signal);
    expect([...r2.verdicts.values()].map((v) => v.outcome)).toEqual(['sent']);
    expect(up.received.map((b) => b.length)).toEqual([small.length, big.length]);
    expect(up.received[0]!.equals(small)).toBe(true);
    expect(up.received[1]!.equals(big)).toBe(true);
    await wire.quit();
    expect(wire.alive).toBe(false);
  });

  it('sends a body held in memory from its pieces, small (handed over whole) and large (pulled), byte for byte', async () => {
    const up = await upstream();
    const t = thread();
    const wire = await t.dial(opts(up.port), new AbortController().signal);
    const pieces = [
      Buffer.from('Received: x\r\n'),
      Buffer.from('Subject: m\r\n\r\n'),
      Buffer.from('.dot\r\nend\r\n'),
    ];
    const small = Buffer.concat(pieces);
    const r1 = await wire.send(env(small.length), new InMemoryBody(pieces), new AbortController().signal);
    expect([...r1.verdicts.values()].map((v) => v.outcome)).toEqual(['sent']);
    const line = Buffer.from(`${'y'.repeat(98)}\r\n`);
    const chunks = Array.from({ length: 30 }, () => Buffer.concat(Array.from({ length: 100 }, () => line)));
    const big = Buffer.concat(chunks);
    const r2 = await wire.send(env(big.length), new InMemoryBody(chunks), new AbortController().signal);
    expect([...r2.verdicts.values()].map((v) => v.outcome)).toEqual(['sent']);
    expect(up.received[0]!.equals(small)).toBe(true);
    expect(up.received[1]!.equals(big)).toBe(true);
    await wire.quit();
  });

  it('answers an aborted transaction at once (deferred, session unusable), with the deadline status', async () => {
    const up = await upstream();
    up.hold = true;
    const t = thread();
    const wire = await t.dial(opts(up.port), new AbortController().signal);
    const ctrl = new AbortController();
    const sent = wire.send(env(10), bodyOf(Buffer.from('hello\r\n')), ctrl.signal);
    while (up.received.length === 0) await new Promise((r) => setTimeout(r, 10));
    ctrl.abort(new AttemptDeadline(1));
    const r = await sent;
    const v = [...r.verdicts.values()][0]!;
    expect(v.outcome).toBe('deferred');
    expect(v.status).toBe('4.4.2');
    expect(r.usable).toBe(false);
    expect(r.untouched).toBe(false); // bytes may have left: never retried on another session
    for (const f of up.release) f();
  });

  it('fails what a dead thread had in flight as deferred, and the next dial starts a new thread', async () => {
    const up = await upstream();
    up.hold = true;
    const t = thread();
    const wire = await t.dial(opts(up.port), new AbortController().signal);
    const sent = wire.send(env(10), bodyOf(Buffer.from('hello\r\n')), new AbortController().signal);
    while (up.received.length === 0) await new Promise((r) => setTimeout(r, 10));
    await t.crash();
    const r = await sent;
    expect([...r.verdicts.values()][0]!.outcome).toBe('deferred');
    expect(r.usable).toBe(false);
    expect(wire.alive).toBe(false);
    up.hold = false;
    const again = await t.dial(opts(up.port), new AbortController().signal);
    const r2 = await again.send(env(7), bodyOf(Buffer.from('again\r\n')), new AbortController().signal);
    expect([...r2.verdicts.values()][0]!.outcome).toBe('sent');
    await again.quit();
  });

  it('rejects a dial under way when the thread exits, as a connection failure', async () => {
    // An upstream that accepts and never greets: the dial waits in the thread.
    const held: Socket[] = [];
    const mute = createServer((s) => held.push(s));
    await new Promise<void>((r) => mute.listen(0, '127.0.0.1', r));
    cleanups.push(() => {
      for (const s of held) s.destroy();
      return new Promise<void>((r) => mute.close(() => r()));
    });
    const t = thread();
    const dialing = t.dial(opts((mute.address() as { port: number }).port), new AbortController().signal);
    while (held.length === 0) await new Promise((r) => setTimeout(r, 10));
    await t.crash();
    const err = await dialing.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Error);
    expect(errorFields(err)).toEqual({ message: 'delivery thread exited', code: 'ECONNECTION' });
  });

  it('rejects a dial the upstream refuses with the SMTP fields the breaker and the verdicts read', async () => {
    const t = thread();
    const err = await t.dial(opts(1), new AbortController().signal).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Error);
    // the same as a dial on this thread gives
    const log = { debug() {}, warn() {} };
    const local = await dialLocal(opts(1), new AbortController().signal, log).catch((e: unknown) => e);
    expect(errorFields(err)).toEqual(errorFields(local));
    expect(errorFields(err).code).toBe('ESOCKET');
  });

  it("dot-stuffs with the relay's scan in the thread too, not nodemailer's per-byte loop", async () => {
    // Each thread loads its own nodemailer: the main thread's install does not reach the thread.
    const tsx = pathToFileURL(
      createRequire(import.meta.url)
        .resolve('tsx/esm/api')
        .replace(/\.cjs$/, '.mjs'),
    );
    const main = new URL('../../../src/relay/delivery/wire-thread-main.ts', import.meta.url);
    const stuff = new URL('../../../src/relay/delivery/dot-stuff.ts', import.meta.url);
    const code = `
      const { parentPort } = await import('node:worker_threads');
      (await import(${JSON.stringify(tsx.href)})).register();
      await import(${JSON.stringify(main.href)});
      const { fastDotStuffingInstalled } = await import(${JSON.stringify(stuff.href)});
      parentPort.postMessage({ probe: await fastDotStuffingInstalled() });`;
    const w = new Worker(`import(${JSON.stringify(`data:text/javascript,${encodeURIComponent(code)}`)})`, {
      eval: true,
    });
    cleanups.push(() => w.terminate().then(() => undefined));
    const probe = await new Promise((resolve, reject) => {
      w.on('message', (m: { probe?: boolean }) => 'probe' in m && resolve(m.probe));
      w.once('error', reject);
    });
    expect(probe).toBe(true);
  });
});
