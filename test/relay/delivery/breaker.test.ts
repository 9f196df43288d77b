import { createServer, type Server } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { freePort } from '../../helpers/ports.ts';
import { type Harness, startHarness } from './harness.ts';
import { type Peer, startPeer } from './peer.ts';

/**
 * An unreachable upstream must not be hammered: after connection failures the whole upstream is
 * backed off and due messages are deferred without dialing (Postfix's dead destination).
 */

/** A "dead" upstream: accepts TCP connections and drops them before any greeting, counting them. */
async function deadUpstream(port: number): Promise<{ server: Server; dials: () => number }> {
  let dials = 0;
  const server = createServer((socket) => {
    dials++;
    socket.destroy();
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  return { server, dials: () => dials };
}

let h: Harness | undefined;
let peer: Peer | undefined;
let dead: Server | undefined;
afterEach(async () => {
  await h?.dispose();
  await peer?.close();
  await new Promise((r) => (dead ? dead.close(r) : r(undefined)));
  h = undefined;
  peer = undefined;
  dead = undefined;
});

describe('circuit breaker', () => {
  it('100 messages to a dead upstream: a handful of dials, every message deferred; delivered once it is back', async () => {
    const port = await freePort();
    const d = await deadUpstream(port);
    dead = d.server;
    h = await startHarness({
      upstream: { url: `smtp://127.0.0.1:${port}`, maxConnections: 20 },
      queue: { retryInitialSeconds: 0.3, retryMaxSeconds: 0.6, retryJitter: 0 },
    });
    const ids = new Set<string>();
    for (let i = 0; i < 100; i++) ids.add((await h.submit({ to: [`u${i}@example.net`] })).id);
    await h.waitFor(
      () => new Set(h!.attempts().map((l) => l['queueId'] as string)).size === 100,
      10_000,
      'one attempt per message',
    );
    const attempts = h.attempts();
    expect(attempts.every((l) => l['outcome'] === 'deferred')).toBe(true);
    const suspended = attempts.filter((l) => String(l['reply']).startsWith('delivery temporarily suspended'));
    expect(suspended.length).toBeGreaterThanOrEqual(95);
    expect(d.dials()).toBeLessThanOrEqual(3);
    expect(h.logs.some((l) => l.msg === 'upstream unreachable: delivery suspended')).toBe(true);
    expect(await h.metric('emails_sent_total', { status: 'deferred' })).toBeGreaterThanOrEqual(100);

    // The upstream comes back on the same port: the breaker's next probe finds it and the
    // suspended messages go out without waiting for their own backoff.
    await new Promise((r) => d.server.close(r));
    dead = undefined;
    const dialsWhileDown = d.dials();
    peer = await startPeer({ port });
    await h.waitEmpty(20_000);
    expect(peer.messages).toHaveLength(100);
    // Sessions are reused (20 at most at once); the few dialed on the main thread before the
    // burst made the relay busy are closed when released and dialed again in the delivery thread.
    expect(peer.connections).toBeLessThanOrEqual(25);
    expect(dialsWhileDown).toBeLessThanOrEqual(10);
    expect(h.logs.some((l) => l.msg === 'upstream reachable again')).toBe(true);
  });

  it('connection refused: deferred with the socket error; flush() resets the breaker and retries now', async () => {
    const port = await freePort(); // nothing listens there
    h = await startHarness({
      upstream: { url: `smtp://127.0.0.1:${port}` },
      queue: { retryInitialSeconds: 60, retryMaxSeconds: 600, retryJitter: 0 },
    });
    for (let i = 0; i < 10; i++) await h.submit({ to: [`u${i}@example.net`] });
    await h.waitFor(() => h!.attempts().length >= 10, 10_000, 'ten deferrals');
    const [first] = h.attempts();
    expect(first).toMatchObject({ outcome: 'deferred', status: '4.4.2' });
    expect(first!['reply']).toMatch(/ECONNREFUSED/);
    const stillQueued = (await h.spool.get(first!['queueId'] as string))!;
    expect(stillQueued.nextAttemptAt).toBeGreaterThan(Date.now() + 30_000);

    peer = await startPeer({ port });
    h.agent.flush();
    await h.waitEmpty(10_000);
    expect(peer.messages).toHaveLength(10);
  });
});
