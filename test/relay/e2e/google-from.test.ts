import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import { type GoogleSink, startGoogleSink } from '../../helpers/google-sink.ts';
import { eventually } from '../../helpers/poll.ts';
import { startTestRelay, type TestRelay } from '../../helpers/relay.ts';

const run = promisify(execFile);

/**
 * The seed's smtplib snippet sends "message" with no header at all; Gmail refuses a message
 * without From:. Through the relay (which adds From: from the envelope) into a sink that refuses
 * such messages as Google does.
 */
describe("the seed's header-less smtplib message through the relay to a Google-like sink", () => {
  const open: { relay?: TestRelay; sink?: GoogleSink }[] = [];
  afterEach(async () => {
    for (const o of open.splice(0)) {
      await o.relay?.dispose();
      await o.sink?.close();
    }
  });

  async function setup(addMissingFrom: boolean) {
    const sink = await startGoogleSink();
    const relay = await startTestRelay({
      hostname: 'mail.example.com',
      smtp: { addMissingFrom },
      upstream: { url: sink.url, replyClasses: { profile: 'google' } },
      queue: { retryInitialSeconds: 60 },
    });
    open.push({ relay, sink });
    const script = `
import smtplib
server = smtplib.SMTP('127.0.0.1', ${relay.port})
server.sendmail('from@example.com', 'to@example.com', 'message')
server.quit()
`;
    await run('python3', ['-c', script]);
    return { sink, relay };
  }

  it('is delivered with From: <envelope sender> added', async () => {
    const { sink } = await setup(true);
    await eventually('the delivery', () => sink.messages.length === 1 || undefined);
    expect(sink.messages[0]!.data).toMatch(/^From: from@example\.com$/m);
    expect(sink.messages[0]!.data).toMatch(/\r\n\r\nmessage$/);
  });

  it('without the addition Google refuses it (550 5.7.1), which is why it is on by default', async () => {
    const { sink, relay } = await setup(false);
    await eventually(
      'the refusal',
      () => sink.refusals.some((r) => /^550[ -]5\.7\.1 .*no From: header/.test(r.reply)) || undefined,
    );
    expect(sink.messages.filter((m) => m.to.includes('to@example.com'))).toHaveLength(0);
    await eventually(
      'the bounce',
      async () => ((await relay.metrics.bouncesGenerated.get()).values[0]?.value ?? 0) === 1 || undefined,
    );
  });
});
