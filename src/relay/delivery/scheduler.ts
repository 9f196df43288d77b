import { MinHeap } from './heap.ts';

/**
 * The queue manager's timing, knowing nothing of mail: ids with a due time in a min-heap, one
 * timer for the earliest, at most `concurrency` runs at once, FIFO among ids that are due (ties
 * broken by insertion order). Postfix's qmgr, minus the destinations (we have one upstream).
 */

export interface SchedulerOptions {
  concurrency: number;
  now: () => number;
  /** Works on one id; resolves with when to run it again, or undefined when it is done. */
  run: (id: string, signal: AbortSignal) => Promise<number | undefined>;
  /** run() threw: when to run the id again (undefined: forget it). */
  onError: (id: string, err: unknown) => number | undefined;
}

interface Item {
  id: string;
  due: number;
  seq: number;
}

interface Running {
  promise: Promise<void>;
  ctrl: AbortController;
  /** Drop the id when the run ends instead of re-queueing it (deleted meanwhile). */
  forget: boolean;
  /** Asked for now while it ran (queue retry): due at once if the run defers it. */
  again: boolean;
}

/** Node timers take at most a signed 32-bit delay. */
const MAX_TIMER_MS = 2 ** 31 - 1;

export class Scheduler {
  private readonly heap = new MinHeap<Item>((a, b) => a.due < b.due || (a.due === b.due && a.seq < b.seq));
  /** The live item of each queued id; heap entries that are not it are stale (lazy deletion). */
  private readonly queued = new Map<string, Item>();
  private readonly running = new Map<string, Running>();
  private seq = 0;
  private timer: NodeJS.Timeout | undefined;
  private timerAt = Number.POSITIVE_INFINITY;
  private stopped = false;

  constructor(private readonly opts: SchedulerOptions) {}

  /** Queue an id (or move it) to run at `due`. Ignored while it runs: the run decides what comes next. */
  schedule(id: string, due: number): void {
    if (this.running.has(id)) return;
    this.insert(id, due, this.seq++);
    this.pump();
  }

  /** Queue many ids at once (start-up: the whole spool), with one pass of the scheduler. */
  scheduleMany(items: Iterable<{ id: string; due: number }>): void {
    for (const { id, due } of items) if (!this.running.has(id)) this.insert(id, due, this.seq++);
    this.pump();
  }

  has(id: string): boolean {
    return this.queued.has(id) || this.running.has(id);
  }

  isRunning(id: string): boolean {
    return this.running.has(id);
  }

  /**
   * Run now (keeps its place among other due ids). One that is running runs again as soon as
   * this run ends, if the run defers it: the run began before whatever the caller knows now
   * (an operator's retry after fixing the upstream). False if not queued.
   */
  makeDue(id: string): boolean {
    const item = this.queued.get(id);
    if (!item) {
      const running = this.running.get(id);
      if (running) running.again = true;
      return running !== undefined;
    }
    this.insert(id, Math.min(item.due, this.opts.now()), item.seq);
    this.pump();
    return true;
  }

  /** Everything queued becomes due now, in the order it was queued; what is running, as makeDue. */
  makeAllDue(): void {
    for (const r of this.running.values()) r.again = true;
    const now = this.opts.now();
    const items = [...this.queued.values()].map((i) => ({ ...i, due: Math.min(i.due, now) }));
    for (const i of items) this.queued.set(i.id, i);
    this.heap.reset(items);
    this.pump();
  }

  /** Remove a queued id; a running one is dropped when its run ends. Resolves once it is out. */
  async forget(id: string): Promise<boolean> {
    const running = this.running.get(id);
    if (running) {
      running.forget = true;
      await running.promise;
      return true;
    }
    return this.queued.delete(id);
  }

  get inFlight(): number {
    return this.running.size;
  }

  get size(): number {
    return this.queued.size + this.running.size;
  }

  /** No new runs; wait for running ones until `deadline` (ms epoch), then abort them and wait for them to settle. */
  async stop(deadline: number): Promise<void> {
    this.stopped = true;
    this.disarm();
    const settled = () => Promise.all([...this.running.values()].map((r) => r.promise));
    if (!this.running.size) return;
    let timer: NodeJS.Timeout | undefined;
    const expired = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, Math.max(0, deadline - Date.now()));
    });
    await Promise.race([settled(), expired]);
    clearTimeout(timer);
    for (const r of this.running.values()) r.ctrl.abort(new Error('shutting down'));
    await settled();
  }

  private insert(id: string, due: number, seq: number): void {
    const item = { id, due, seq };
    this.queued.set(id, item);
    this.heap.push(item);
  }

  private peek(): Item | undefined {
    for (;;) {
      const top = this.heap.peek();
      if (!top || this.queued.get(top.id) === top) return top;
      this.heap.pop();
    }
  }

  private pump(): void {
    if (this.stopped) return;
    const now = this.opts.now();
    while (this.running.size < this.opts.concurrency) {
      const top = this.peek();
      if (!top || top.due > now) break;
      this.heap.pop();
      this.queued.delete(top.id);
      this.launch(top.id);
    }
    this.arm();
  }

  private launch(id: string): void {
    const ctrl = new AbortController();
    const entry: Running = { ctrl, forget: false, again: false, promise: Promise.resolve() };
    this.running.set(id, entry);
    entry.promise = (async () => {
      let due: number | undefined;
      try {
        due = await this.opts.run(id, ctrl.signal);
      } catch (err) {
        due = this.opts.onError(id, err);
      }
      this.running.delete(id);
      if (due !== undefined && !entry.forget)
        this.insert(id, entry.again ? Math.min(due, this.opts.now()) : due, this.seq++);
      this.pump();
    })();
  }

  /** One timer, for the earliest due id, and only while a run could start. */
  private arm(): void {
    const top = this.running.size < this.opts.concurrency ? this.peek() : undefined;
    const at = top ? top.due : Number.POSITIVE_INFINITY;
    if (at === this.timerAt) return;
    this.disarm();
    if (at === Number.POSITIVE_INFINITY) return;
    this.timerAt = at;
    this.timer = setTimeout(
      () => {
        this.timer = undefined;
        this.timerAt = Number.POSITIVE_INFINITY;
        this.pump();
      },
      Math.min(MAX_TIMER_MS, Math.max(0, at - this.opts.now())),
    );
    // The SMTP listener keeps a relay process alive; the queue timer alone should not.
    this.timer.unref();
  }

  private disarm(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.timerAt = Number.POSITIVE_INFINITY;
  }
}
