import { SMTPServer } from 'smtp-server';
import { runLoadProcess } from './load.ts';
import { readStat } from './proc.ts';
import { formatSummary, summarise } from './profile.ts';
import { buildRelay, startRelay } from './relay.ts';
import { cleanupAll, freePort } from './util.ts';

/**
 * The relay's CPU per message and its latency at 1 and 20 sessions, in a few seconds: the compiled
 * relay in its own process delivering to an in-process sink that stores nothing, driven by
 * bench/load.ts in a third process. CPU (utime+stime of the relay) is steadier than throughput
 * on a shared machine; it is the figure to compare before and after a change to the SMTP path.
 *   node --import tsx bench/front-cpu.ts [messages] [sizeBytes] [--profile]   (CPU per module with --profile)
 */
const messages = Number(process.argv[2] ?? 2000);
const size = Number(process.argv[3] ?? 2048);
const profile = process.argv.includes('--profile') ? `/tmp/front-cpu-${process.pid}.cpuprofile` : undefined;
let received = 0;
const sinkPort = await freePort();
const sink = new SMTPServer({
  authOptional: true,
  disabledCommands: ['AUTH', 'STARTTLS'],
  logger: false,
  onData(stream, _s, cb) {
    stream.on('data', () => undefined);
    stream.on('end', () => {
      received++;
      cb();
    });
  },
});
await new Promise<void>((r) => sink.listen(sinkPort, '127.0.0.1', r));
try {
  const relay = await startRelay(await buildRelay('built'), {
    upstream: `smtp://127.0.0.1:${sinkPort}`,
    ...(profile ? { cpuProfile: profile } : {}),
  });
  for (const sessions of [1, 20]) {
    const want = received + messages;
    const cpu0 = readStat(relay.pid)!.cpu;
    const r = await runLoadProcess({
      port: relay.port,
      sessions,
      messages,
      size,
      rate: 0,
      timeoutMs: 300_000,
    });
    while (received < want) await new Promise((res) => setTimeout(res, 20));
    const cpu = readStat(relay.pid)!.cpu - cpu0;
    console.log(
      JSON.stringify({
        sessions,
        size,
        sent: r.sent,
        failed: r.failed,
        cpuMsPerMessage: Math.round((cpu / messages) * 1e5) / 100,
        acceptedPerSecond: Math.round(r.sent / r.seconds),
        latencyMs: r.latency,
      }),
    );
  }
  await relay.stop();
  if (profile) console.log(formatSummary(summarise(profile, 30), 30));
} finally {
  sink.close();
  await cleanupAll();
}
