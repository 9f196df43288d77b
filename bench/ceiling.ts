import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { parseArgs } from 'node:util';
import { smtpSource } from './load.ts';
import { startPostfix } from './postfix.ts';
import { buildRelay, type RelayEntry, startRelay } from './relay.ts';
import { Sink } from './sink.ts';
import { formatRatio, ratioSpread, spread } from './spread.ts';
import { ensureTools } from './tools.ts';
import {
  cleanupAll,
  cleanupOnSignals,
  freePort,
  listening,
  onCleanup,
  terminate,
  waitUntil,
} from './util.ts';

/**
 * How far from what Node.js itself allows is the relay? Postfix, the relay, two bare Node.js
 * servers (bench/bare-smtp.ts: canned replies and an fdatasync before each 250, the second one
 * also writing each message to a sink after its 250) and smtp-server as the relay drives it with
 * nothing behind it (bench/bare-smtp-server.ts) take turns under smtp-source, round after
 * round, after the same warm-up; every rate is compared with Postfix's in the same round.
 * The gap between the relay and the bare servers is what the relay's own software costs per
 * message; smtp-server's place in between splits it into the SMTP library's share and the
 * relay's own code's (the journal's records, policy, filter, delivery, logs and metrics).
 *
 *   node --import tsx bench/ceiling.ts [--sessions 1] [--messages 1500] [--rounds 6] [--size 2048]
 */

const { values: o } = parseArgs({
  options: {
    sessions: { type: 'string', default: '1' },
    messages: { type: 'string', default: '1500' },
    rounds: { type: 'string', default: '6' },
    size: { type: 'string', default: '2048' },
    warm: { type: 'string', default: '3000' },
    'relay-entry': { type: 'string', default: 'built' },
  },
});

type Name = 'postfix' | 'relay' | 'bare' | 'bare+delivery' | 'smtp-server';
const NAMES: readonly Name[] = ['postfix', 'relay', 'bare', 'bare+delivery', 'smtp-server'];

async function startBare(upstreamPort?: number, script = './bare-smtp.ts'): Promise<number> {
  const port = await freePort();
  const args = ['--import', import.meta.resolve('tsx'), new URL(script, import.meta.url).pathname];
  const child: ChildProcess = spawn(
    process.execPath,
    [...args, String(port), ...(upstreamPort ? [String(upstreamPort)] : [])],
    {
      stdio: 'ignore',
    },
  );
  onCleanup(() => terminate(child, 2000));
  await waitUntil(`${script} on ${port}`, () => listening(port), 10_000, 50);
  return port;
}

cleanupOnSignals();
try {
  await ensureTools(['postfix']);
  const sessions = Number(o.sessions);
  const size = Number(o.size);
  const sinks = { postfix: await Sink.start(), relay: await Sink.start(), delivery: await Sink.start() };
  const pf = await startPostfix(sinks.postfix.port);
  onCleanup(() => pf.stop());
  const relay = await startRelay(await buildRelay(o['relay-entry'] as RelayEntry), {
    upstream: sinks.relay.url,
  });
  const ports: Record<Name, number> = {
    postfix: pf.port,
    relay: relay.port,
    bare: await startBare(),
    'bare+delivery': await startBare(sinks.delivery.port),
    'smtp-server': await startBare(undefined, './bare-smtp-server.ts'),
  };
  const pass = async (name: Name, messages: number) => {
    const { seconds } = await smtpSource({ port: ports[name], sessions, messages, size, timeoutMs: 600_000 });
    return messages / seconds;
  };
  for (const name of NAMES) await pass(name, Number(o.warm)); // the cell's own session count, as run.ts
  const rates = Object.fromEntries(NAMES.map((n) => [n, [] as number[]])) as Record<Name, number[]>;
  for (let i = 0; i < Number(o.rounds); i++) {
    for (const name of i % 2 ? [...NAMES].reverse() : NAMES) {
      spawnSync('sync');
      await new Promise((r) => setTimeout(r, 500));
      rates[name].push(await pass(name, Number(o.messages)));
    }
    console.log(
      `round ${i + 1}: ${NAMES.map((n) => `${n} ${rates[n].at(-1)!.toFixed(0)}`).join(', ')} msg/s`,
    );
  }
  console.log(
    `accepted/s, ${size} B x ${sessions} sessions, median (min–max), and against Postfix round by round:`,
  );
  for (const name of NAMES) {
    const s = spread(rates[name]);
    const vs = ratioSpread(
      rates[name].map((r, i) => ({ a: r, b: rates.postfix[i]! })),
      (p) => p.a,
      (p) => p.b,
    );
    console.log(
      `  ${name.padEnd(14)} ${s.median.toFixed(0)} (${s.min.toFixed(0)}–${s.max.toFixed(0)})  ${formatRatio(vs)}`,
    );
  }
} finally {
  await cleanupAll();
}
