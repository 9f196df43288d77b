/**
 * Where new upstream sessions live: on the main thread while the relay is quiet, in the delivery
 * thread (wire-thread.ts) while it is busy. At one client, one attempt at a time, handing each
 * transaction to the thread and back (two thread wake-ups, two copies) cost more CPU than the
 * session itself: 1.7-1.9 ms of CPU per message without the thread against 2.3-2.6 ms with it,
 * on two cores that the client and the smarthost share. Busy, the main thread is the bottleneck
 * and the thread takes a quarter of its work. The load is a moving average of the attempts under
 * way, with a gap between the two thresholds so that a burst or a lull does not move sessions
 * back and forth (each move costs a dial).
 */

/** EMAIL_RELAY_DELIVERY_QUIET_LOCAL=0: every session in the thread, whatever the load (A/B, tests). */
export const QUIET_LOCAL = process.env.EMAIL_RELAY_DELIVERY_QUIET_LOCAL !== '0';

export class SessionPlacement {
  private load = 0;
  /** New sessions go on the main thread. */
  local = true;

  constructor(
    private readonly o = {
      /** Weight of one sample in the moving average. */
      alpha: 0.05,
      /** Into the thread above this many attempts under way, on average... */
      busyAbove: 3,
      /** ...and back below this many. */
      quietBelow: 1.5,
    },
  ) {}

  /** An attempt starts, with `inFlight` attempts under way (itself included). True if the place changed. */
  sample(inFlight: number): boolean {
    this.load += (inFlight - this.load) * this.o.alpha;
    if (this.local && this.load > this.o.busyAbove) this.local = false;
    else if (!this.local && this.load < this.o.quietBelow) this.local = true;
    else return false;
    return true;
  }

  /** The moving average, for the log line of a move. */
  get average(): number {
    return Math.round(this.load * 100) / 100;
  }
}
