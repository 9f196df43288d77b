import { parseArgs } from 'node:util';
import { loadConfig } from '../config/load.ts';
import { type ControlReply, type ControlRequest, controlSocketCandidates, sendControl } from './control.ts';
import { formatMessage, formatQuarantine, formatQueue } from './queue-format.ts';
import {
  deleteMessage,
  flushQueue,
  listMessages,
  listQuarantined,
  retryMessage,
  showMessage,
  spoolOwner,
} from './spool/index.ts';
import type { QuarantinedMessage, QueuedMessage } from './spool/types.ts';

const USAGE =
  'usage: email-relay queue list|show ID|flush|delete ID|retry ID|drain [--spool DIR] [--config FILE] [--json] [--unready-seconds S]';

/**
 * `email-relay queue`: mailq / postqueue -f / postsuper -d for the relay's spool. Reads go to the
 * files (safe on a live spool); changes go to the running relay over its control socket, or to
 * the files when no relay owns the spool. Returns the exit code.
 */
export async function queueCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    options: {
      spool: { type: 'string' },
      config: { type: 'string', short: 'c' },
      json: { type: 'boolean', default: false },
      'unready-seconds': { type: 'string' },
    },
    allowPositionals: true,
    strict: true,
  });
  const [action, id, ...extra] = positionals;
  const needsId = action === 'show' || action === 'delete' || action === 'retry';
  if (!action || extra.length || (needsId && !id) || (!needsId && id)) return usage();
  const config = await loadConfig({
    ...(values.config ? { file: values.config } : {}),
    flags: values.spool ? { spool: values.spool } : {},
  });
  const dir = config.spool.dir;
  const out = (s: string) => process.stdout.write(s);
  const sockets = controlSocketCandidates(dir, config.spool.controlSocket);
  /** The running relay's answer on the first socket that answers; undefined when none does. */
  const ask = async (req: ControlRequest, timeoutMs?: number): Promise<ControlReply | undefined> => {
    for (const path of sockets) {
      const reply = await sendControl(path, req, timeoutMs).catch(() => undefined);
      if (reply) return reply;
    }
    return undefined;
  };

  switch (action) {
    case 'list': {
      let messages: QueuedMessage[] = [];
      let quarantined: QuarantinedMessage[];
      const owner = await spoolOwner(dir);
      // A live relay answers from its index at one instant: reading the files while it renames
      // them (a reschedule) would miss messages.
      const reply = owner?.alive ? await ask({ cmd: 'list' }) : undefined;
      if (reply?.ok) {
        const snap = reply.result as {
          messages: QueuedMessage[];
          unreadable: Array<{ id: string; error: string }>;
          quarantined: QuarantinedMessage[];
        };
        messages = snap.messages;
        quarantined = snap.quarantined;
        for (const u of snap.unreadable) process.stderr.write(`${u.id}: unreadable: ${u.error}\n`);
      } else {
        if (owner?.alive)
          process.stderr.write(
            `email-relay queue: the relay (pid ${owner.pid}) does not answer on its control socket: listing the files, which may miss messages it is moving\n`,
          );
        for await (const m of listMessages(dir)) {
          if (m.message) messages.push(m.message);
          else process.stderr.write(`${m.entry.id}: unreadable: ${m.error}\n`);
        }
        quarantined = listQuarantined(dir);
      }
      out(
        values.json
          ? `${JSON.stringify(quarantined.length ? { messages, quarantined } : messages, null, 2)}\n`
          : formatQueue(messages) + formatQuarantine(quarantined, dir),
      );
      return 0;
    }
    case 'show': {
      const shown = await showMessage(dir, id!);
      if (!shown) return fail(`${id}: no such message in ${dir}`);
      out(values.json ? `${JSON.stringify(shown, null, 2)}\n` : formatMessage(shown.message, shown.headers));
      return 0;
    }
    case 'flush':
    case 'retry':
    case 'delete': {
      const req = (action === 'flush' ? { cmd: 'flush' } : { cmd: action, id: id! }) as ControlRequest;
      const owner = await spoolOwner(dir);
      if (owner?.alive) {
        const reply = await ask(req);
        if (!reply)
          return fail(`the relay (pid ${owner.pid}) owns ${dir} but does not answer on its control socket`);
        if (!reply.ok) return fail(reply.error);
        out(
          `${action === 'flush' ? 'flushing the queue' : `${id}: ${action === 'delete' ? 'deleted' : 'scheduled now'}`} (running relay, pid ${owner.pid})\n`,
        );
        return 0;
      }
      if (action === 'flush') {
        const n = await flushQueue(dir);
        out(
          `${n} deferred message${n === 1 ? '' : 's'} now due (relay not running: delivered at its next start)\n`,
        );
        return 0;
      }
      const done = action === 'delete' ? await deleteMessage(dir, id!) : await retryMessage(dir, id!);
      if (!done) return fail(`${id}: no such message in ${dir}`);
      out(`${id}: ${action === 'delete' ? 'deleted' : 'due now'}\n`);
      return 0;
    }
    case 'drain': {
      // The running relay goes unready, stops taking mail, hands its queue to its peers (or
      // delivers it) and stops; this waits for the report.
      const unreadySeconds = Number(values['unready-seconds'] ?? 10);
      if (!Number.isFinite(unreadySeconds) || unreadySeconds < 0) return usage();
      const timeout =
        (unreadySeconds + config.shutdownGraceSeconds + config.peers.drainTimeoutSeconds + 60) * 1000;
      const reply = await ask({ cmd: 'drain', unreadySeconds }, timeout);
      if (!reply) return fail(`no relay is running on ${dir}`);
      if (!reply.ok) return fail(reply.error);
      out(values.json ? `${JSON.stringify(reply.result)}\n` : `drained: ${JSON.stringify(reply.result)}\n`);
      return (reply.result as { left?: number }).left ? 1 : 0;
    }
    default:
      return usage();
  }
}

function usage(): number {
  process.stderr.write(`${USAGE}\n`);
  return 2;
}

function fail(message: string): number {
  process.stderr.write(`email-relay queue: ${message}\n`);
  return 1;
}
