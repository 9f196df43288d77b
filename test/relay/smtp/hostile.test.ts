import { describe, expect, it } from 'vitest';
import { greetedSession, outboxMessages, relaysPerTest } from '../../helpers/relay.ts';
import { SmtpDialog } from '../../helpers/smtp-dialog.ts';

/**
 * Clients that cannot relay, or that talk as slowly as they can, must not lock out those that
 * can: outsiders have a small pool of slots of their own, and a command must be completed within
 * idleTimeoutSeconds however slowly its bytes trickle in.
 */

const relayWith = relaysPerTest();

/** Sends one byte every `everyMs` until stopped (the classic slowloris). */
function trickle(c: SmtpDialog, everyMs: number): () => void {
  const t = setInterval(() => {
    if (!c.socket.destroyed) c.socket.write('X');
  }, everyMs);
  return () => clearInterval(t);
}

describe('hostile clients', () => {
  it('1000 trickling outsiders do not keep one allowed client out', async () => {
    const relay = await relayWith({
      access: { allow: ['127.0.0.1/32'] },
      smtp: { maxClients: 1000, maxClientsPerAddress: 5000, idleTimeoutSeconds: 300 },
    });
    const outsiders: SmtpDialog[] = [];
    const stops: Array<() => void> = [];
    for (let i = 0; i < 1000; i++) {
      const c = await SmtpDialog.open(relay.port, '127.0.0.1', `127.0.${1 + (i % 4)}.${2 + (i % 200)}`);
      outsiders.push(c);
    }
    const greetings = await Promise.all(outsiders.map((c) => c.reply().then((r) => r[0]!)));
    for (const c of outsiders) stops.push(trickle(c, 1000));
    const admitted = greetings.filter((g) => g.startsWith('220 ')).length;
    const busy = greetings.filter((g) => g === '421 4.3.2 All server ports are busy').length;
    // Outsiders get a pool of their own (50 of 1000); the rest is refused at once.
    expect(admitted).toBe(50);
    expect(busy).toBe(950);

    const c = await greetedSession(relay.port, '127.0.0.1');
    expect(await c.cmd('MAIL FROM:<a@example.com>')).toEqual(['250 2.1.0 Ok']);
    expect(await c.cmd('RCPT TO:<b@example.com>')).toEqual(['250 2.1.5 Ok']);
    expect(await c.cmd('DATA')).toEqual(['354 End data with <CR><LF>.<CR><LF>']);
    expect((await c.cmd('Subject: through\r\n\r\nhello\r\n.'))[0]).toMatch(/^250 2\.0\.0 Ok: queued as /);
    c.close();
    expect((await outboxMessages(relay, 1)).size).toBe(1);
    for (const s of stops) s();
    for (const o of outsiders) o.close();
  }, 120_000);

  it('a session that never completes a command is closed with 421 4.4.2, however slowly it trickles', async () => {
    const relay = await relayWith({ smtp: { idleTimeoutSeconds: 2 } });
    const c = await greetedSession(relay.port);
    const stop = trickle(c, 300); // far inside the idle timeout: it never fires on silence
    expect(await c.reply(30_000)).toEqual(['421 4.4.2 Error: timeout exceeded']);
    await c.closedByServer();
    stop();
    const m = await relay.metrics.registry.metrics();
    expect(m).toMatch(/smtp_rejections_total\{reason="timeout"\} 1/);
  }, 60_000);

  it('a client that completes its commands in time keeps its session', async () => {
    const relay = await relayWith({ smtp: { idleTimeoutSeconds: 2 } });
    const c = await greetedSession(relay.port);
    for (let i = 0; i < 4; i++) {
      await new Promise((r) => setTimeout(r, 800));
      expect(await c.cmd('NOOP')).toEqual(['250 2.0.0 Ok']);
    }
    c.close();
  }, 60_000);
});
