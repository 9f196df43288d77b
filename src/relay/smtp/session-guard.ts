/**
 * Two limits on hostile or broken clients that smtp-server has no hook for.
 *
 * Slots: clients that may relay (inside `access.allow`, or pods of admitted namespaces) share
 * `maxClients`; everyone else gets a small pool of its own, so a thousand outsiders that can
 * never relay cannot lock out one client that can. An outsider past its pool is refused at once.
 *
 * Command deadline: smtp-server's idle timeout restarts with every byte, so a client trickling
 * one byte every few seconds keeps a session forever. Here the bound runs from the last complete
 * command, and nothing else extends it: a session that does not complete a command within it is
 * closed with 421. It does not count while the client waits for us (a handler that has not
 * answered yet) or during DATA (bounded as a whole by dataTimeoutSeconds).
 */

export type SlotClass = 'inside' | 'outside';

/** Outsiders' own pool: a twentieth of maxClients, at least 10, at most maxClients. */
export function outsiderSlots(maxClients: number): number {
  return Math.min(maxClients, Math.max(10, Math.ceil(maxClients / 20)));
}

export class ConnectionSlots {
  private readonly used: Record<SlotClass, number> = { inside: 0, outside: 0 };
  private readonly limit: Record<SlotClass, number>;

  constructor(maxClients: number, outside = outsiderSlots(maxClients)) {
    this.limit = { inside: maxClients, outside };
  }

  /** A release function, or undefined when the class's slots are all taken. */
  take(cls: SlotClass): (() => void) | undefined {
    if (this.used[cls] >= this.limit[cls]) return undefined;
    this.used[cls]++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.used[cls]--;
    };
  }

  inUse(cls: SlotClass): number {
    return this.used[cls];
  }
}

/** What the deadline needs of a connection (smtp-server-adapter.ts's FrontConnection). */
export interface GuardedConnection {
  /** The client owes us nothing now: DATA is being received, or a handler has not answered yet. */
  waitingForUs(): boolean;
  closing(): boolean;
}

export interface CommandGuard {
  /** A complete command line arrived: the deadline starts again. */
  commandSeen(): void;
  /** Disarms it (call on close). */
  stop(): void;
}

/** Arms the command deadline on a connection; `expire` sends the 421 (which closes it). */
export function guardCommands(conn: GuardedConnection, timeoutMs: number, expire: () => void): CommandGuard {
  let stopped = false;
  const fire = () => {
    if (stopped || conn.closing()) return;
    // The client owes us nothing now: the deadline starts again once it does.
    if (conn.waitingForUs()) return arm();
    expire();
  };
  // One timer per session, restarted with refresh() (also after it fired): no Timeout object
  // created and no timer-list insert per command.
  const timer = setTimeout(fire, timeoutMs);
  timer.unref();
  const arm = () => {
    if (!stopped) timer.refresh();
  };
  return {
    commandSeen: arm,
    stop: () => {
      stopped = true;
      clearTimeout(timer);
    },
  };
}
