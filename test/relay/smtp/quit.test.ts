import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestRelay, type TestRelay } from '../../helpers/relay.ts';

async function activeConnections(relay: TestRelay): Promise<number> {
  return (await relay.metrics.connectionsActive.get()).values[0]?.value ?? 0;
}

describe('QUIT', () => {
  let relay: TestRelay;
  beforeAll(async () => {
    relay = await startTestRelay();
  });
  afterAll(() => relay.dispose());

  it('closes the session once the 221 is out, without waiting for the client to close its side', async () => {
    // allowHalfOpen: this client keeps its side open after the relay's FIN, as a slow client would
    const socket = connect({ port: relay.port, host: '127.0.0.1', allowHalfOpen: true });
    let text = '';
    socket.on('data', (d: Buffer) => {
      text += d.toString('latin1');
      if (/^220 /m.test(text) && !text.includes('250')) socket.write('EHLO client.example.com\r\n');
      else if (/^250 /m.test(text) && !text.includes('221')) socket.write('QUIT\r\n');
    });
    await new Promise<void>((resolve) => socket.once('end', () => resolve()));
    expect(text).toMatch(/^221 2\.0\.0 Bye\r\n/m);
    // The relay has closed the session by the time its FIN arrives (give it a few event-loop
    // turns, not wall-clock time); smtp-server alone would hold it half-closed for 5 s.
    let open = await activeConnections(relay);
    for (let turn = 0; open > 0 && turn < 50; turn++) {
      await new Promise((r) => setImmediate(r));
      open = await activeConnections(relay);
    }
    expect(open).toBe(0);
    expect(socket.destroyed).toBe(false); // our side is still open
    socket.destroy();
  });
});
