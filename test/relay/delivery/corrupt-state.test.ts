import { readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { type Harness, startHarness } from './harness.ts';

/**
 * A message whose state file is corrupt used to be attempted again and again (25,290 'delivery
 * attempt failed unexpectedly' lines in one run). Now it is delivered from its original envelope;
 * one with nothing readable left is quarantined. Neither loops.
 */

let h: Harness | undefined;
afterEach(async () => {
  await h?.dispose();
  h = undefined;
});

const failures = (h: Harness) =>
  h.logs.filter((l) => l.msg === 'delivery attempt failed unexpectedly').length;

describe('corrupt spool files at delivery', () => {
  it('a corrupt state file: delivered from the original envelope, no retry loop', async () => {
    h = await startHarness({}, { start: false });
    const msg = await h.submit({ to: ['user@example.net'], subject: 'state', quiet: true });
    await h.spool.update({ ...msg, attempts: 2 });
    const q = join(h.config.spool.dir, 'queue');
    const state = readdirSync(q).find((n) => n.startsWith(`${msg.id}-s`))!;
    writeFileSync(join(q, state), '{"v":1,"recipients":');
    h.agent.start();
    await h.waitEmpty(20_000);
    expect(failures(h)).toBe(0);
    expect(
      h.logs.some(
        (l) => l.queueId === msg.id && /recovered from the message's original envelope/.test(String(l.msg)),
      ),
    ).toBe(true);
    expect(readdirSync(join(h.config.spool.dir, 'quarantine')).some((n) => n.startsWith(state))).toBe(true);
  }, 60_000);

  it('nothing readable left: quarantined once, not attempted again', async () => {
    h = await startHarness({}, { start: false });
    const msg = await h.submit({ to: ['user@example.net'], subject: 'gone', quiet: true });
    await h.spool.update({ ...msg, attempts: 2 });
    const q = join(h.config.spool.dir, 'queue');
    for (const n of readdirSync(q)) writeFileSync(join(q, n), 'garbage');
    h.agent.start();
    await h.waitEmpty(20_000);
    await new Promise((r) => setTimeout(r, 2000)); // room for a loop to show itself
    expect(failures(h)).toBe(0);
    const quarantined = h.logs.filter((l) => l.queueId === msg.id && /quarantined/.test(String(l.msg)));
    expect(quarantined).toHaveLength(1);
    expect(readdirSync(join(h.config.spool.dir, 'quarantine'))).toHaveLength(2);
  }, 60_000);
});
