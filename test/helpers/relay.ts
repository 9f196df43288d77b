import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, expect } from 'vitest';
import { parseConfig } from '../../src/config/load.ts';
import type { RelayConfigInput } from '../../src/config/schema.ts';
import { silentLogger } from '../../src/lib/logger.ts';
import { type Relay, startRelay } from '../../src/relay/relay.ts';
import { eventually } from './poll.ts';
import { SmtpDialog } from './smtp-dialog.ts';

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

/** Relays started through the returned function are disposed of after each test of the file. */
export function relaysPerTest(): (input?: RelayConfigInput) => Promise<TestRelay> {
  let relays: TestRelay[] = [];
  afterEach(async () => {
    await Promise.all(relays.map((r) => r.dispose()));
    relays = [];
  });
  return async (input = {}) => {
    const r = await startTestRelay(input);
    relays.push(r);
    return r;
  };
}

/** A session past the greeting and EHLO (from a chosen loopback address). */
export async function greetedSession(port: number, localAddress?: string): Promise<SmtpDialog> {
  const c = await SmtpDialog.open(port, '127.0.0.1', localAddress);
  expect((await c.reply())[0]).toMatch(/^220 /);
  expect((await c.cmd('EHLO client.example.com')).at(-1)).toBe('250 DSN');
  return c;
}

/**
 * The outbox once the queue is empty and it holds at least `atLeast` messages (or after
 * `timeoutMs`), as queue id -> message text.
 */
export async function outboxMessages(
  relay: TestRelay,
  atLeast = 0,
  timeoutMs = 10_000,
): Promise<Map<string, string>> {
  const dir = join(relay.dir, 'outbox');
  const list = async () => (await readdir(dir).catch(() => [] as string[])).filter((f) => f.endsWith('.eml'));
  // at the deadline, whatever is there (the caller's assertions say what was missing)
  await eventually(
    'an empty queue and the outbox',
    async () => (relay.spool.stats().messages === 0 && (await list()).length >= atLeast) || undefined,
    { timeoutMs },
  ).catch(() => undefined);
  const names = await list();
  return new Map(
    await Promise.all(
      names.map(async (f) => [f.slice(0, -4), await readFile(join(dir, f), 'latin1')] as const),
    ),
  );
}
