import type SMTPConnection from 'nodemailer/lib/smtp-connection';
import type { RelayConfig } from '../../config/schema.ts';
import { observeSession } from './nodemailer-adapter.ts';

/**
 * Deadlines on the upstream session, so a smarthost that trickles its replies (a tarpit, one byte
 * a second) defers the message instead of holding a connection for ever. smtp-connection's own
 * timers cover the TCP connect, the greeting and the TLS handshake, and its socket timeout fires
 * only on silence; these bound each whole reply, as Postfix's smtp_*_timeout do with
 * smtp_per_record_deadline, plus a deadline for a whole attempt (AttemptDeadline, agent.ts).
 * The connection's internals are reached through nodemailer-adapter.ts only.
 */

export type Deadlines = RelayConfig['upstream']['deadlines'];

type Phase = { field: keyof Deadlines; what: string };

/** The deadline a command's reply gets. AUTH continuation lines (base64) count as AUTH. */
function phaseOf(command: string, last: Phase | undefined): Phase {
  const verb = /^[A-Za-z]+(?: [A-Za-z]+:)?/.exec(command)?.[0]?.toUpperCase() ?? '';
  if (verb === 'EHLO' || verb === 'HELO' || verb === 'LHLO' || verb === 'STARTTLS')
    return { field: 'helo', what: verb };
  if (verb === 'MAIL FROM:') return { field: 'mail', what: 'MAIL FROM' };
  if (verb === 'RCPT TO:') return { field: 'rcpt', what: 'RCPT TO' };
  if (verb === 'DATA') return { field: 'dataInit', what: 'DATA' };
  if (verb === 'RSET') return { field: 'rset', what: 'RSET' };
  if (verb === 'QUIT') return { field: 'rset', what: 'QUIT' };
  if (verb === 'AUTH' || last?.field === 'auth') return { field: 'auth', what: 'AUTH' };
  return { field: 'mail', what: verb || 'command' };
}

/** A deadline passed; the session is failed with this error (code ETIMEDOUT: a deferral). */
export function deadlineError(what: string, seconds: number, field: string): Error {
  return new Error(`no complete reply to ${what} within ${seconds} s (upstream.deadlines.${field})`);
}

/** Arms the deadlines on a fresh connection; returns a function that disarms them. */
export function watchDeadlines(conn: SMTPConnection, deadlines: Deadlines): () => void {
  // Commands awaiting their reply, oldest first (several when pipelined); the timer is the oldest's.
  const pending: Phase[] = [];
  let timer: NodeJS.Timeout | undefined;
  let last: Phase | undefined;
  let disposed = false;

  const expire = (phase: Phase) => {
    timer = undefined;
    if (!disposed) fail(deadlineError(phase.what, deadlines[phase.field], phase.field), phase.what);
  };
  const arm = () => {
    clearTimeout(timer);
    timer = undefined;
    const head = pending[0];
    if (!head || disposed) return;
    timer = setTimeout(() => expire(head), deadlines[head.field] * 1000);
    timer.unref();
  };
  const fail = observeSession(conn, {
    command(line) {
      last = phaseOf(line, last);
      pending.push(last);
      if (pending.length === 1) arm();
    },
    reply() {
      // The greeting (nothing pending) is smtp-connection's own greetingTimeout.
      if (!pending.length) return;
      pending.shift();
      arm();
    },
    body(sent, onEnd) {
      // Progress within dataXfer while the message goes out, then the final reply within dataDone.
      const done: Phase = { field: 'dataDone', what: 'end of DATA' };
      pending.push(done);
      clearTimeout(timer);
      let seen = -1;
      const watchXfer = () => {
        if (disposed) return;
        const bytes = sent();
        if (bytes === seen) return expire({ field: 'dataXfer', what: 'the message content' });
        seen = bytes;
        timer = setTimeout(watchXfer, deadlines.dataXfer * 1000);
        timer.unref();
      };
      watchXfer();
      onEnd(() => {
        if (pending[0] === done) arm();
      });
    },
  });

  return () => {
    disposed = true;
    clearTimeout(timer);
  };
}

/** Why an attempt was cut short: the whole-attempt deadline (a deferral) or shutdown. */
export class AttemptDeadline extends Error {
  readonly code = 'ETIMEDOUT';
  constructor(readonly seconds: number) {
    super(`delivery attempt did not finish within ${seconds} s (upstream.deadlines.attempt)`);
  }
}

/** The text and status of a deferral for an aborted attempt. */
export function interruption(signal: AbortSignal): { text: string; status: string; deadline: boolean } {
  if (signal.reason instanceof AttemptDeadline)
    return { text: signal.reason.message, status: '4.4.2', deadline: true };
  return { text: 'delivery interrupted: shutting down', status: '4.3.2', deadline: false };
}
