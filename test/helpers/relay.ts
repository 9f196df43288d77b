import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfig } from '../../src/config/load.ts';
import type { RelayConfigInput } from '../../src/config/schema.ts';
import { silentLogger } from '../../src/lib/logger.ts';
import { type Relay, startRelay } from '../../src/relay/relay.ts';

export interface TestRelay extends Relay {
  dir: string;
  port: number;
  /** Stops the relay and removes its directory. */
  dispose(): Promise<void>;
}

/** A relay in this process on a free loopback port with its own spool and outbox. */
export async function startTestRelay(input: RelayConfigInput = {}): Promise<TestRelay> {
  const dir = await mkdtemp(join(tmpdir(), 'email-relay-test-'));
  const config = parseConfig({
    hostname: 'mail.bionicaisolutions.com',
    listen: '127.0.0.1:0',
    ...input,
    spool: { dir: join(dir, 'spool'), ...input.spool },
    upstream: { outboxDir: join(dir, 'outbox'), ...input.upstream },
    shutdownGraceSeconds: input.shutdownGraceSeconds ?? 5,
  });
  const relay = await startRelay(config, silentLogger, { defaultMetrics: false });
  return {
    ...relay,
    dir,
    port: relay.smtp.port,
    dispose: async () => {
      await relay.stop('test').catch(() => undefined);
      await rm(dir, { recursive: true, force: true });
    },
  };
}
