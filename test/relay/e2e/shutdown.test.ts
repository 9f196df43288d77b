import { connect, type Socket } from 'node:net';
import { describe, expect, it } from 'vitest';
import { greetedSession, relaysPerTest } from '../../helpers/relay.ts';

/**
 * SIGTERM in Kubernetes: the kubelet kills the pod terminationGracePeriodSeconds after the
 * signal. Every open session must hear 421 4.3.2 before the relay exits, also a client still in
 * DATA when the grace period runs out, and the relay must be gone before the kubelet's kill.
 */

const relayWith = relaysPerTest();

describe('shutdown', () => {
  it('a client still in DATA at the deadline gets 421 4.3.2, and stop() ends inside the grace period', async () => {
    const grace = 3;
    const relay = await relayWith({ shutdownGraceSeconds: grace, upstream: { url: 'smtp://127.0.0.1:1' } });
    const inData = await greetedSession(relay.port);
    await inData.cmd('MAIL FROM:<a@example.com>');
    await inData.cmd('RCPT TO:<b@example.com>');
    expect((await inData.cmd('DATA'))[0]).toMatch(/^354 /);
    inData.write('Subject: never finished\r\n\r\nhalf a mess');
    const inMail = await greetedSession(relay.port);
    await inMail.cmd('MAIL FROM:<a@example.com>');
    const idle = await greetedSession(relay.port);
    // One that never closes its side, not even after the server's 421 and FIN.
    const stubborn = await halfOpenClient(relay.port);
    stubborn.write(
      'EHLO stubborn.example.com\r\nMAIL FROM:<s@example.com>\r\nRCPT TO:<t@example.com>\r\nDATA\r\nSubject: x\r\n\r\nhal',
    );

    const t0 = Date.now();
    const stopping = relay.stop('SIGTERM');
    expect(await idle.reply()).toEqual(['421 4.3.2 Service shutting down']);
    // The client between MAIL and DATA is not sending anything: it hears 421 at the deadline too.
    expect(await inMail.reply(grace * 1000 + 5000)).toEqual(['421 4.3.2 Service shutting down']);
    expect(await inData.reply(grace * 1000 + 5000)).toEqual(['421 4.3.2 Service shutting down']);
    await inData.closedByServer();
    await stopping;
    expect(stubborn.text()).toMatch(/421 4\.3\.2 Service shutting down\r\n$/);
    const took = Date.now() - t0;
    console.log(`SIGTERM with a client stuck in DATA: stopped after ${took} ms (grace ${grace} s)`);
    expect(took).toBeLessThan(grace * 1000);
    expect(relay.spool.stats().messages).toBe(0); // half a message is never queued
  }, 30_000);
});

/** A raw client with allowHalfOpen: it reads the server's FIN and keeps its own side open. */
async function halfOpenClient(
  port: number,
): Promise<{ write(s: string): void; text(): string; socket: Socket }> {
  const socket = connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  let buf = '';
  socket.setEncoding('latin1');
  socket.on('data', (d: string) => {
    buf += d;
  });
  socket.on('error', () => undefined);
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  while (!buf.includes('220 ')) await new Promise((r) => setTimeout(r, 20));
  return { write: (s) => socket.write(s), text: () => buf, socket };
}
