/**
 * A/B of two relays of this tree, same build, that differ only in their environment (the A/B
 * switches named in bench/README.md): both run side by side on one sink, and they take turns,
 * A then B, B then A, round after round, so that the drift of a shared machine (±20 % within
 * minutes) falls on both. Each round gives one ratio A/B; the median and range over the rounds
 * decide, never one pass.
 *
 *   node --import tsx bench/ab.ts --b "EMAIL_RELAY_DELIVERY_QUIET_LOCAL=0" [--a "..."]
 *        [--sessions 1] [--messages 800] [--rounds 8] [--size 2048]
 */
import { spawnSync } from 'node:child_process';
import { parseArgs } from 'node:util';
import { smtpSource } from './load.ts';
import { buildRelay, type RelayEntry, startRelay } from './relay.ts';
import { Sink } from './sink.ts';
import { spread } from './spread.ts';
import { ensureTools } from './tools.ts';
import { cleanupAll, cleanupOnSignals, parseEnvList } from './util.ts';

const { values: o } = parseArgs({
  options: {
    a: { type: 'string', default: '' },
    b: { type: 'string', default: '' },
    sessions: { type: 'string', default: '1' },
    messages: { type: 'string', default: '800' },
    rounds: { type: 'string', default: '8' },
    size: { type: 'string', default: '2048' },
    warm: { type: 'string', default: '3000' },
    'relay-entry': { type: 'string', default: 'built' },
  },
});

cleanupOnSignals();
try {
  await ensureTools(['postfix']);
  const build = await buildRelay(o['relay-entry'] as RelayEntry);
  const sink = await Sink.start();
  const size = Number(o.size);
  const relays = {
    A: await startRelay(build, { upstream: sink.url, env: parseEnvList(o.a) }),
    B: await startRelay(build, { upstream: sink.url, env: parseEnvList(o.b) }),
  };
  let delivered = 0;
  const pass = async (port: number, sessions: number, messages: number) => {
    const t0 = performance.now();
    await smtpSource({ port, sessions, messages, size, timeoutMs: 60_000 + messages * 1000 });
    delivered += messages;
    await sink.waitFor(delivered, 60_000 + messages * 100);
    return (messages / (performance.now() - t0)) * 1000;
  };
  // The same warm-up as the main benchmark's cells (at their own session count, at most 20): V8
  // done optimising the paths the rounds take before anything counts.
  for (const r of [relays.A, relays.B]) await pass(r.port, Math.min(Number(o.sessions), 20), Number(o.warm));
  const ratios: number[] = [];
  for (let i = 0; i < Number(o.rounds); i++) {
    const rate = { A: 0, B: 0 };
    for (const k of i % 2 ? (['B', 'A'] as const) : (['A', 'B'] as const)) {
      spawnSync('sync');
      await new Promise((r) => setTimeout(r, 500));
      rate[k] = await pass(relays[k].port, Number(o.sessions), Number(o.messages));
    }
    ratios.push(rate.A / rate.B);
    console.log(
      `round ${i + 1}: A ${rate.A.toFixed(0)} msg/s, B ${rate.B.toFixed(0)} msg/s, A/B ${(rate.A / rate.B).toFixed(2)}`,
    );
  }
  const s = spread(ratios);
  console.log(
    `A/B end to end: ${s.median.toFixed(2)}x (${s.min.toFixed(2)}–${s.max.toFixed(2)}) over ${s.n} rounds`,
  );
} finally {
  await cleanupAll();
}
