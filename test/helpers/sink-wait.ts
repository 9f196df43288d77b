import type { SinkMessage, SmtpSink } from './smtp-sink.ts';

/** Waits until the sink holds a message whose data satisfies `pred`; returns it. */
export async function waitForSinkMessage(
  sink: SmtpSink,
  pred: (data: string) => boolean,
  timeoutMs = 15_000,
): Promise<SinkMessage> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const hit = (await sink.messages()).find((m) => pred(m.data));
    if (hit) return hit;
    if (Date.now() > deadline) throw new Error(`no matching message at the sink after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
