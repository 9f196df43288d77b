/**
 * CPU instructions per message, under callgrind: a count that the other load on a shared machine
 * does not move (wall-clock and CPU seconds do). The relay (the compiled JS with the image's node
 * flags, as in the rest of the bench) runs under `valgrind --tool=callgrind` once with N messages
 * and once with 2N, driven by smtp-source (one connection per message), both runs after the same
 * warm-up of W messages; the instructions of the whole process, start to exit, are counted and
 *
 *   instructions per message = (instr(W + 2N) - instr(W + N)) / N
 *
 * so start-up, warm-up and shutdown cancel out (without the warm-up, N=100 gave 8.1 M at 1
 * session where N=200 gave 6.2 M: V8 was still optimising). Every thread of the process counts
 * (libuv's pool doing the fdatasyncs, V8's compiler and GC threads); the kernel's work does not.
 *
 *   node --import tsx bench/instructions.ts                       # 2 KB at 1 and 20 sessions (W=2000, N=400)
 *   node --import tsx bench/instructions.ts --sessions 1 -m 200 -w 200   # quick, but mostly JIT warm-up
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { smtpSource } from './load.ts';
import { type Build, buildRelay, type RelayEntry, startRelay } from './relay.ts';
import { Sink } from './sink.ts';
import { ensureTools, findBinary } from './tools.ts';
import { cleanupAll, cleanupOnSignals, onCleanup, run } from './util.ts';

export interface InstructionCount {
  size: number;
  sessions: number;
  /** N: the smaller run; the larger one sends 2N */
  messages: number;
  /** sent first in both runs, so that JIT warm-up is over when the counted messages come */
  warmup: number;
  instructionsN: number;
  instructions2N: number;
  /** (instr(2N) - instr(N)) / N */
  perMessage: number;
  /** the part of perMessage spent in V8's optimising compiler (TurboFan, on its own thread) */
  compilePerMessage: number;
  /** wall time of both runs under valgrind */
  seconds: number;
}

/**
 * V8's optimising compiler, by symbol. It runs on a background thread and keeps compiling for
 * thousands of messages (functions that get hot slowly, recompiles after a deopt): in one count,
 * 2.45 of 4.51 M per message between message 600 and 1400 at 1 session. Counted apart, so that a
 * change to the relay's own work is not lost in, or mistaken for, a change in JIT warm-up.
 */
const COMPILER_SYMBOL = /v8::internal::compiler::|v8::internal::Zone::/;

/** Sums the self cost of the functions callgrind_annotate lists whose name matches. */
export function costMatching(annotated: string, pattern: RegExp): number {
  let sum = 0;
  for (const line of annotated.split('\n')) {
    const m = /^\s*([\d,]+) \([\s\d.]+%\)\s+(.*)$/.exec(line);
    if (m && !m[2]!.includes('PROGRAM TOTALS') && pattern.test(m[2]!))
      sum += Number(m[1]!.replaceAll(',', ''));
  }
  return sum;
}

/** Total instructions (Ir) of one relay process that accepted and delivered `messages`, and the compiler's part. */
async function countRun(
  build: Build,
  o: { size: number; sessions: number; messages: number; warmup: number; nodeArgs: string[] },
): Promise<{ total: number; compile: number }> {
  const valgrind = findBinary('valgrind');
  if (!valgrind) throw new Error('valgrind not found (Debian: apt-get install valgrind)');
  const dir = await mkdtemp(join(tmpdir(), 'bench-callgrind-'));
  const removeDir = onCleanup(() => rm(dir, { recursive: true, force: true }));
  const out = join(dir, 'callgrind.out');
  const sink = await Sink.start();
  try {
    const relay = await startRelay(build, {
      upstream: sink.url,
      nodeArgs: o.nodeArgs,
      // counts only (no cache simulation, no per-line data): the cheapest callgrind run
      wrapper: [valgrind, '--tool=callgrind', `--callgrind-out-file=${out}`, '--dump-line=no', '-q'],
      startTimeoutMs: 300_000,
      stopGraceMs: 300_000,
    });
    try {
      let total = 0;
      for (const messages of [o.warmup, o.messages].filter((n) => n > 0)) {
        await smtpSource({
          port: relay.port,
          sessions: o.sessions,
          messages,
          size: o.size,
          timeoutMs: 60_000 + messages * 2000,
        });
        total += messages;
        await sink.waitFor(total, 60_000 + messages * 1000);
      }
    } finally {
      await relay.stop(); // SIGTERM: the relay drains and exits; callgrind writes its totals then
    }
    const text = await readFile(out, 'utf8').catch(() => '');
    const m = /^(?:summary|totals): (\d+)/m.exec(text);
    if (!m) throw new Error(`callgrind wrote no totals to ${out} (did the relay exit cleanly?)`);
    const annotate = findBinary('callgrind_annotate');
    if (!annotate) throw new Error('callgrind_annotate not found (Debian: apt-get install valgrind)');
    const a = await run(annotate, ['--inclusive=no', '--threshold=100', out], 300_000);
    if (a.code !== 0) throw new Error(`callgrind_annotate exited ${a.code}: ${a.stderr.trim()}`);
    return { total: Number(m[1]), compile: costMatching(a.stdout, COMPILER_SYMBOL) };
  } finally {
    await sink.stop();
    await removeDir();
  }
}

export async function instructionsPerMessage(
  build: Build,
  o: { size: number; sessions: number; messages: number; warmup?: number; nodeArgs?: string[] },
): Promise<InstructionCount> {
  const t0 = performance.now();
  const args = { ...o, warmup: o.warmup ?? o.messages, nodeArgs: o.nodeArgs ?? [] };
  const n = await countRun(build, args);
  const n2 = await countRun(build, { ...args, messages: 2 * o.messages });
  return {
    size: o.size,
    sessions: o.sessions,
    messages: o.messages,
    warmup: args.warmup,
    instructionsN: n.total,
    instructions2N: n2.total,
    perMessage: Math.round((n2.total - n.total) / o.messages),
    compilePerMessage: Math.round((n2.compile - n.compile) / o.messages),
    seconds: Math.round((performance.now() - t0) / 100) / 10,
  };
}

export const formatCount = (c: InstructionCount) =>
  `${c.size} B x ${c.sessions} sessions: ${(c.perMessage / 1e6).toFixed(2)} M instructions per message, ` +
  `${((c.perMessage - c.compilePerMessage) / 1e6).toFixed(2)} M without V8's optimising compiler ` +
  `(W=${c.warmup}, N=${c.messages}: ${(c.instructionsN / 1e9).toFixed(3)} G, 2N: ${(c.instructions2N / 1e9).toFixed(3)} G; ${c.seconds} s)`;

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const { values } = parseArgs({
    options: {
      messages: { type: 'string', short: 'm', default: '400' },
      warmup: { type: 'string', short: 'w', default: '2000' },
      sessions: { type: 'string', default: '1,20' },
      size: { type: 'string', default: '2048' },
      'relay-entry': { type: 'string', default: 'built' },
      'relay-node-args': { type: 'string', default: '' },
      json: { type: 'boolean', default: false },
    },
  });
  cleanupOnSignals();
  try {
    await ensureTools(['postfix', 'valgrind']);
    const build = await buildRelay(values['relay-entry'] as RelayEntry);
    const results: InstructionCount[] = [];
    for (const sessions of values.sessions.split(',').filter(Boolean).map(Number)) {
      const c = await instructionsPerMessage(build, {
        size: Number(values.size),
        sessions,
        messages: Number(values.messages),
        warmup: Number(values.warmup),
        nodeArgs: values['relay-node-args'].split(/\s+/).filter(Boolean),
      });
      results.push(c);
      console.log(formatCount(c));
    }
    if (values.json) console.log(JSON.stringify(results));
  } finally {
    await cleanupAll();
  }
}
