import { eventually } from './poll.ts';
import type { SinkMessage, SmtpSink } from './smtp-sink.ts';

/** Waits until the sink holds a message whose data satisfies `pred`; returns it. */
export async function waitForSinkMessage(
  sink: SmtpSink,
  pred: (data: string) => boolean,
  timeoutMs = 15_000,
): Promise<SinkMessage> {
  return eventually(
    'a matching message at the sink',
    async () => (await sink.messages()).find((m) => pred(m.data)),
    { timeoutMs },
  );
}
