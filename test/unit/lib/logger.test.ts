import { describe, expect, it } from 'vitest';
import { createLogger, turnBatched } from '../../../src/lib/logger.ts';

const turn = () => new Promise<void>((r) => setImmediate(r));

describe("turnBatched (the relay's stdout)", () => {
  it('writes the lines of one event-loop turn with one write, in order, before the next turn', async () => {
    const writes: string[] = [];
    const logger = createLogger('info', {}, turnBatched({ write: (s) => writes.push(s) }));
    logger.info({ queueId: 'a' }, 'queued');
    logger.info({ queueId: 'b' }, 'queued');
    logger.warn('third');
    expect(writes).toEqual([]); // not yet: at the end of this turn
    await turn();
    expect(writes).toHaveLength(1);
    const lines = writes[0]!
      .trimEnd()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(lines.map((l) => l.queueId ?? l.msg)).toEqual(['a', 'b', 'third']);
    logger.info({ queueId: 'c' }, 'queued');
    await turn();
    expect(writes).toHaveLength(2);
    expect(JSON.parse(writes[1]!).queueId).toBe('c');
    await turn();
    expect(writes).toHaveLength(2); // nothing logged, nothing written
  });

  it('flushes what is pending when the process exits', () => {
    const writes: string[] = [];
    const before = process.listeners('exit');
    const logger = createLogger('info', {}, turnBatched({ write: (s) => writes.push(s) }));
    const added = process.listeners('exit').filter((l) => !before.includes(l));
    expect(added).toHaveLength(1);
    logger.error('fatal: exiting');
    added[0]!(1); // what process.exit() runs, without exiting the test worker
    expect(writes).toHaveLength(1);
    expect(JSON.parse(writes[0]!).msg).toBe('fatal: exiting');
  });
});
