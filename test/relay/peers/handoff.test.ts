import { type AddressInfo, createServer } from 'node:net';
import type { Readable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import type { RelayConfigInput } from '../../../src/config/schema.ts';
import { handOff } from '../../../src/relay/peers/handoff-client.ts';
import type { QueuedMessage } from '../../../src/relay/spool/types.ts';
import { relaysPerTest, type TestRelay } from '../../helpers/relay.ts';
import { SmtpDialog } from '../../helpers/smtp-dialog.ts';
import { type SmtpSink, startSmtpSink } from '../../helpers/smtp-sink.ts';

/**
 * Hand-off between real relays on loopback: a relay that leaves gives its queue to a peer over
 * SMTP (the peer listener), keeping each message's id (its arrival time), envelope, DSN
 * parameters, client and attempt history; the upstream then gets every message once.
 */

const startRelay = relaysPerTest();
let sinks: SmtpSink[] = [];
afterEach(async () => {
  await Promise.all(sinks.map((s) => s.dispose()));
  sinks = [];
});

async function downUpstream(): Promise<SmtpSink> {
  const sink = await startSmtpSink();
  sinks.push(sink);
  await sink.stop(); // port reserved, nothing listening: connection refused
  return sink;
}

const peerConfig = (sink: SmtpSink, extra: RelayConfigInput = {}): RelayConfigInput => ({
  upstream: { url: sink.url, connectTimeoutSeconds: 2 },
  queue: { retryInitialSeconds: 3600, retryMaxSeconds: 3600 },
  ...extra,
  peers: { listen: '127.0.0.1:0', trust: { networks: ['127.0.0.0/8'] }, ...extra.peers },
});

/** One message through port 25 with DSN parameters; resolves with its queue id. */
async function send(relay: TestRelay, n: number): Promise<string> {
  const c = await SmtpDialog.open(relay.port);
  await c.reply();
  await c.cmd('EHLO app.example.com');
  expect((await c.cmd(`MAIL FROM:<app@example.com> RET=HDRS ENVID=env-${n}`))[0]).toMatch(/^250/);
  expect(
    (await c.cmd(`RCPT TO:<a${n}@example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a${n}@example.net`))[0],
  ).toMatch(/^250/);
  expect((await c.cmd(`RCPT TO:<b${n}@example.net>`))[0]).toMatch(/^250/);
  expect((await c.cmd('DATA'))[0]).toMatch(/^354/);
  const reply = await c.cmd(
    `From: app@example.com\r\nTo: a${n}@example.net\r\nSubject: hand-off ${n}\r\nMessage-ID: <m${n}@example.com>\r\n\r\nbody ${n}\r\n.\r\n..leading dot\r\n.`,
  );
  await c.cmd('QUIT');
  const id = /queued as ([0-9A-Z]+)/.exec(reply[0] ?? '')?.[1];
  expect(id, reply.join('\n')).toBeDefined();
  return id!;
}

async function body(relay: TestRelay, id: string): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of relay.spool.openBody(id) as Readable) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('latin1');
}

async function waitFor(pred: () => boolean | Promise<boolean>, what: string, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await pred())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('hand-off between relays', () => {
  it('a leaving relay gives its queue to a peer with ids, envelopes, DSN parameters and attempts; handed on again, the upstream gets each message once', async () => {
    const sink = await downUpstream();
    // The peer's own upstream accepts and never greets: its attempts hang, so the attempt
    // counts it holds are the ones handed over.
    const hang = createServer(() => undefined);
    await new Promise<void>((r) => hang.listen(0, '127.0.0.1', () => r()));
    const hangUrl = `smtp://127.0.0.1:${(hang.address() as AddressInfo).port}`;
    try {
      const stays = await startRelay(
        peerConfig(sink, { upstream: { url: hangUrl, greetingTimeoutSeconds: 120 } }),
      );
      const leaves = await startRelay(
        peerConfig(sink, { peers: { addresses: [`127.0.0.1:${stays.peers!.port}`] } }),
      );
      const ids: string[] = [];
      for (let i = 0; i < 6; i++) ids.push(await send(leaves, i));
      // Each was tried against the dead upstream: history to keep.
      await waitFor(async () => {
        const msgs = await Promise.all(ids.map((id) => leaves.spool.get(id)));
        return msgs.every((m) => m && m.attempts >= 1 && m.nextAttemptAt > Date.now() + 60_000);
      }, 'first attempts');
      const before = new Map<string, { msg: QueuedMessage; body: string }>();
      for (const id of ids)
        before.set(id, { msg: (await leaves.spool.get(id))!, body: await body(leaves, id) });

      const report = await leaves.drain(0);
      expect(report).toMatchObject({ handedOff: 6, left: 0 });
      await leaves.done;

      expect(stays.spool.stats().messages).toBe(6);
      expect(stays.spool.stats().oldestReceivedAt).toBe(
        Math.min(...[...before.values()].map((b) => b.msg.receivedAt)),
      );
      for (const [id, b] of before) {
        const got = await stays.spool.get(id);
        expect(got, id).toBeDefined();
        expect(got!.receivedAt).toBe(b.msg.receivedAt);
        expect(got!.attempts).toBe(b.msg.attempts);
        expect(got!.from).toBe(b.msg.from);
        expect(got!.dsn).toEqual(b.msg.dsn);
        expect(got!.client).toEqual(b.msg.client);
        expect(got!.messageId).toBe(b.msg.messageId);
        expect(got!.recipients).toEqual(b.msg.recipients);
        expect(got!.size).toBe(b.msg.size);
        expect(await body(stays, id)).toBe(b.body);
      }

      // Handed on once more, to a relay whose upstream works.
      await sink.restart();
      const last = await startRelay(peerConfig(sink));
      const stays2 = stays as TestRelay & { config: { peers: { addresses: string[] } } };
      stays2.config.peers.addresses.push(`127.0.0.1:${last.peers!.port}`);
      expect(await stays.drain(0)).toMatchObject({ handedOff: 6, left: 0 });
      const delivered = await sink.waitForMessages(12, 20_000);
      await waitFor(() => last.spool.stats().messages === 0, 'empty queue');
      const perRecipient = new Map<string, number>();
      for (const m of delivered) {
        const mid = /Message-ID: (<[^>]+>)/i.exec(m.data)?.[1] ?? '?';
        for (const to of m.to) perRecipient.set(`${mid} ${to}`, (perRecipient.get(`${mid} ${to}`) ?? 0) + 1);
        expect(m.mailArgs).toMatch(/RET=HDRS/);
        expect(m.mailArgs).toMatch(/ENVID=env-\d/);
        if (m.to[0]?.startsWith('a')) expect(m.rcptArgs[0]).toMatch(/NOTIFY=SUCCESS,FAILURE/);
      }
      expect(perRecipient.size).toBe(12);
      expect([...perRecipient.values()].every((n) => n === 1)).toBe(true);
    } finally {
      hang.close();
    }
  });

  it('a hand-off repeated after a lost reply is recognised by its id and queued once', async () => {
    const sink = await downUpstream();
    const stays = await startRelay(peerConfig(sink));
    const other = await startRelay(peerConfig(sink));
    const id = await send(other, 1);
    const msg = (await other.spool.get(id))!;
    const peer = { host: '127.0.0.1', port: stays.peers!.port };
    const first = await handOff(msg, other.spool.openBody(id) as Readable, peer, {
      hostname: 'x.example.com',
    });
    const again = await handOff(msg, other.spool.openBody(id) as Readable, peer, {
      hostname: 'x.example.com',
    });
    expect(first).toMatch(new RegExp(`^250 .*queued as ${id}`));
    expect(again).toMatch(new RegExp(`^250 .*already queued as ${id}`));
    expect(stays.spool.stats().messages).toBe(1);
  });

  it('the peer listener refuses clients that are not peers, and envelopes that disagree with the hand-off line', async () => {
    const sink = await downUpstream();
    const strict = await startRelay(peerConfig(sink, { peers: { trust: { networks: ['10.0.0.0/8'] } } }));
    const c = await SmtpDialog.open(strict.peers!.port);
    expect((await c.reply())[0]).toMatch(/^554 5\.7\.1 Not a peer/);

    const open = await startRelay(peerConfig(sink));
    const other = await startRelay(peerConfig(sink));
    const id = await send(other, 2);
    const msg = (await other.spool.get(id))!;
    const lie = { ...msg, from: 'someone-else@example.com' };
    // The metadata line says one sender, the envelope another.
    const { encodeHandoffLine, handoffMeta } = await import('../../../src/relay/peers/handoff-format.ts');
    const d = await SmtpDialog.open(open.peers!.port);
    await d.reply();
    await d.cmd('EHLO peer.example.com');
    await d.cmd('MAIL FROM:<app@example.com>');
    for (const r of msg.recipients) await d.cmd(`RCPT TO:<${r.address}>`);
    await d.cmd('DATA');
    const line = encodeHandoffLine(handoffMeta(lie, 'x')).toString().trimEnd();
    expect((await d.cmd(`${line}\r\nSubject: x\r\n\r\nx\r\n.`))[0]).toMatch(
      /^554 5\.5\.1 Envelope does not match/,
    );
    expect(open.spool.stats().messages).toBe(0);
  });

  it('with no peer to take it, a leaving relay delivers its queue itself before it stops', async () => {
    const sink = await startSmtpSink();
    sinks.push(sink);
    const leaves = await startRelay(
      peerConfig(sink, {
        upstream: { url: sink.url },
        queue: { retryInitialSeconds: 1, retryMaxSeconds: 1 },
        peers: { addresses: ['127.0.0.1:1'] },
      }),
    );
    await sink.stop();
    const ids = [await send(leaves, 3), await send(leaves, 4)];
    await waitFor(async () => ((await leaves.spool.get(ids[1]!))?.attempts ?? 0) >= 1, 'an attempt');
    await sink.restart();
    const report = await leaves.drain(0);
    expect(report).toMatchObject({ handedOff: 0, delivered: 2, left: 0 });
    // One transaction per NOTIFY group: a (NOTIFY=SUCCESS,FAILURE) and b (default) of each.
    const got = (await sink.messages()).flatMap((m) =>
      m.to.map((to) => `${to} ${/Message-ID: (.*)/.exec(m.data)?.[1]}`),
    );
    expect(got.sort()).toEqual([
      'a3@example.net <m3@example.com>',
      'a4@example.net <m4@example.com>',
      'b3@example.net <m3@example.com>',
      'b4@example.net <m4@example.com>',
    ]);
  });

  it('SIGTERM with drainOnShutdown never keeps the queue on disk (a rollout: the same volume comes back)', async () => {
    const sink = await downUpstream();
    const stays = await startRelay(peerConfig(sink));
    const restarts = await startRelay(
      peerConfig(sink, {
        peers: { addresses: [`127.0.0.1:${stays.peers!.port}`], drainOnShutdown: 'never' },
      }),
    );
    await send(restarts, 5);
    await restarts.stop('SIGTERM');
    expect(stays.spool.stats().messages).toBe(0);
    const { listMessages } = await import('../../../src/relay/spool/index.ts');
    let left = 0;
    for await (const _ of listMessages(restarts.spool.dir)) left++;
    expect(left).toBe(1);
  });
});
