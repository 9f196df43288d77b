import type { AddressInfo } from 'node:net';
import type { Readable } from 'node:stream';
import { SMTPServer, type SMTPServerOptions, type SMTPServerSession } from 'smtp-server';
import { splitHostPort } from '../../lib/host-port.ts';
import type { Logger } from '../../lib/logger.ts';
import type { QueueEntry, Spool, SpoolWriter } from '../spool/types.ts';
import { decodeHandoffLine, type HandoffMeta, newMessageOf } from './handoff-format.ts';
import type { PeerTrust } from './trust.ts';

/** Bytes of the metadata line at most (1000 recipients with their last replies fit easily). */
const MAX_META_LINE = 4 * 1024 * 1024;

export interface HandoffServerDeps {
  listen: string;
  hostname: string;
  spool: Spool;
  trust: PeerTrust;
  logger: Logger;
  /** A message was queued here: deliver it. */
  onQueued: (entry: QueueEntry) => void;
  /** While true, hand-offs are refused (this relay is leaving itself). */
  refusing: () => boolean;
  /** On close, how long sessions in progress may take to finish. */
  closeTimeoutMs?: number;
}

const smtpError = (code: number, text: string) => Object.assign(new Error(text), { responseCode: code });

/**
 * The peer listener's SMTP side: takes queued mail from a relay that is leaving, with the
 * metadata line of handoff-format.ts, and queues it under its original id. Only peers may
 * connect (PeerTrust); no policy applies (the mail was accepted once already, by the policies
 * of the same relay). The reply to the final dot comes after the spool's fsync, as on port 25.
 */
export class HandoffServer {
  private readonly server: SMTPServer;
  private readonly peers = new WeakMap<SMTPServerSession, string>();
  received = 0;

  constructor(private readonly deps: HandoffServerDeps) {
    const options: SMTPServerOptions = {
      name: deps.hostname,
      banner: 'email-relay peer hand-off',
      size: 0,
      authOptional: true,
      disabledCommands: ['AUTH', 'STARTTLS'],
      hideSTARTTLS: true,
      disableReverseLookup: true,
      logger: false,
      closeTimeout: deps.closeTimeoutMs ?? 5000,
      maxRecipients: 100_000,
      onConnect: (session, cb) => {
        deps.trust.identify(session.remoteAddress).then((peer) => {
          if (!peer) {
            deps.logger.warn({ client: session.remoteAddress }, 'hand-off refused: not a peer');
            return cb(smtpError(554, '5.7.1 Not a peer of this relay'));
          }
          this.peers.set(session, peer);
          cb();
        }, cb);
      },
      onMailFrom: (_address, _session, cb) => {
        if (deps.refusing()) return cb(smtpError(421, '4.3.2 Leaving too: hand off elsewhere'));
        deps.spool
          .headroom()
          .then((room) => cb(room > 0 ? undefined : smtpError(452, '4.3.1 Insufficient system storage')), cb);
      },
      onRcptTo: (_address, _session, cb) => cb(),
      onData: (stream, session, cb) => {
        this.receive(stream, session).then(
          (text) => cb(null, text),
          (err: Error & { responseCode?: number }) => {
            stream.resume();
            if (!err.responseCode) deps.logger.error({ err }, 'hand-off failed');
            cb(err.responseCode ? err : smtpError(451, `4.3.0 ${err.message}`));
          },
        );
      },
    };
    this.server = new SMTPServer(options);
    this.server.on('error', (err) => deps.logger.warn({ err }, 'hand-off listener error'));
  }

  async listen(): Promise<AddressInfo> {
    const { host, port } = splitHostPort(this.deps.listen);
    await new Promise<void>((resolve, reject) => {
      this.server.server.once('error', reject);
      this.server.listen(port, host, () => resolve());
    });
    return this.server.server.address() as AddressInfo;
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  private async receive(stream: Readable, session: SMTPServerSession): Promise<string> {
    const { spool, logger } = this.deps;
    const it = stream[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
    // 1. The metadata line.
    let head = Buffer.alloc(0);
    let nl = -1;
    while (nl < 0) {
      const next = await it.next();
      if (next.done) throw smtpError(554, '5.6.0 Message ended before its hand-off line');
      head = Buffer.concat([head, next.value]);
      nl = head.indexOf('\r\n');
      if (nl < 0 && head.length > MAX_META_LINE) throw smtpError(552, '5.3.4 Hand-off line too long');
    }
    let meta: HandoffMeta;
    try {
      meta = decodeHandoffLine(head.subarray(0, nl).toString('latin1'));
    } catch (err) {
      throw smtpError(554, `5.6.0 ${(err as Error).message}`);
    }
    checkEnvelope(meta, session);
    // 2. The message, under its own id. Already here: a hand-off repeated after a lost reply.
    let writer: SpoolWriter;
    try {
      writer = await spool.begin({ id: meta.id });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const known = await spool.get(meta.id);
      if (known && known.size === meta.size && known.from === meta.from) {
        for (;;) if ((await it.next()).done) break;
        logger.info({ queueId: meta.id, peer: this.peers.get(session) }, 'hand-off repeated: already queued');
        return `2.0.0 Ok: already queued as ${meta.id}`;
      }
      // Another message with the same id (two replicas' counters met in one millisecond).
      throw smtpError(450, `4.3.0 Queue id ${meta.id} is taken here: hand it to another peer`);
    }
    try {
      const rest = head.subarray(nl + 2);
      if (rest.length) await writer.write(Buffer.from(rest));
      for (;;) {
        const next = await it.next();
        if (next.done) break;
        await writer.write(next.value);
      }
      if (writer.size !== meta.size)
        throw smtpError(451, `4.3.0 Got ${writer.size} bytes of ${meta.size}: try again`);
      const msg = await writer.commit({ ...newMessageOf(meta), attempts: meta.attempts });
      this.received++;
      logger.info(
        {
          queueId: msg.id,
          from: msg.from,
          to: msg.recipients.map((r) => r.address),
          size: msg.size,
          attempts: msg.attempts,
          peer: this.peers.get(session),
          by: meta.by,
        },
        'queued mail handed over by a peer',
      );
      this.deps.onQueued({
        id: msg.id,
        size: msg.size,
        receivedAt: msg.receivedAt,
        nextAttemptAt: msg.nextAttemptAt,
      });
      return `2.0.0 Ok: queued as ${msg.id}`;
    } catch (err) {
      await writer.abort().catch(() => undefined);
      throw err;
    }
  }
}

/** The SMTP envelope must say what the metadata says: one source of truth, checked. */
function checkEnvelope(meta: HandoffMeta, session: SMTPServerSession): void {
  const from = session.envelope.mailFrom ? session.envelope.mailFrom.address : '';
  const to = session.envelope.rcptTo.map((r) => r.address).sort();
  const want = meta.recipients.map((r) => r.address).sort();
  if (from !== meta.from || to.length !== want.length || to.some((a, i) => a !== want[i]))
    throw smtpError(554, '5.5.1 Envelope does not match the hand-off line');
}
