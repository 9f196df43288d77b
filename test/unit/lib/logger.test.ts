import { describe, expect, it } from 'vitest';
import { batchedLines, createLogger, LOG_WINDOW_MS } from '../../../src/lib/logger.ts';

const windowEnd = () => new Promise<void>((r) => setTimeout(r, LOG_WINDOW_MS + 5));

describe("batchedLines (the relay's stdout)", () => {
  it('writes the lines of one window with one write, in order, at its end', async () => {
    const writes: string[] = [];
    const logger = createLogger('info', {}, batchedLines({ write: (s) => writes.push(s) }));
    logger.info({ queueId: 'a' }, 'queued');
    logger.info({ queueId: 'b' }, 'queued');
    await new Promise((r) => setTimeout(r, 2)); // a later turn of the loop, same window
    logger.warn('third');
    expect(writes).toEqual([]); // not yet: at the end of the window
    await windowEnd();
    expect(writes).toHaveLength(1);
    const lines = writes[0]!
      .trimEnd()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(lines.map((l) => l.queueId ?? l.msg)).toEqual(['a', 'b', 'third']);
    logger.info({ queueId: 'c' }, 'queued');
    await windowEnd();
    expect(writes).toHaveLength(2);
    expect(JSON.parse(writes[1]!).queueId).toBe('c');
    await windowEnd();
    expect(writes).toHaveLength(2); // nothing logged, nothing written
  });

  it('writes at once when a window holds 64 KiB', () => {
    const writes: string[] = [];
    const logger = createLogger('info', {}, batchedLines({ write: (s) => writes.push(s) }));
    for (let i = 0; i < 1000; i++) logger.warn({ i, pad: 'x'.repeat(100) }, 'burst');
    expect(writes.length).toBeGreaterThanOrEqual(1);
    expect(writes.every((w) => w.length >= 64 * 1024)).toBe(true);
  });

  it('flushes what is pending when the process exits', () => {
    const writes: string[] = [];
    const before = process.listeners('exit');
    const logger = createLogger('info', {}, batchedLines({ write: (s) => writes.push(s) }));
    const added = process.listeners('exit').filter((l) => !before.includes(l));
    expect(added).toHaveLength(1);
    logger.error('fatal: exiting');
    added[0]!(1); // what process.exit() runs, without exiting the test worker
    expect(writes).toHaveLength(1);
    expect(JSON.parse(writes[0]!).msg).toBe('fatal: exiting');
  });
});
