import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import type {
  SMTPServer,
  SMTPServerAddress,
  SMTPServerAuthentication,
  SMTPServerAuthenticationResponse,
  SMTPServerDataStream,
  SMTPServerEnvelope,
} from 'smtp-server';
import type { RelayConfig } from '../../config/schema.ts';
import { splitHostPort } from '../../lib/host-port.ts';
import type { Logger } from '../../lib/logger.ts';
import type { Attribution } from '../access/attribution.ts';
import { Networks, normalizeAddress } from '../access/networks.ts';
import type { HeaderEdits } from '../access/policy.ts';
import { PolicySet } from '../access/policy.ts';
import type { RelayMetrics } from '../metrics.ts';
import { isSpoolFull } from '../spool/index.ts';
import type { ClientInfo, NewMessage, QueueEntry, RecipientInput, Spool } from '../spool/types.ts';
import { UserFile } from './auth.ts';
import { MessageFilter, receivedHeader } from './message-filter.ts';
import { PolicyGate } from './policy-gate.ts';
import {
  type EhloOptions,
  policyReply,
  type Reply,
  replies,
  replyOf,
  rewriteReply,
  SmtpReplyError,
} from './replies.ts';
import { ConnectionSlots, guardCommands, type SlotClass } from './session-guard.ts';
import { createFrontServer, type FrontConnection, type FrontOptions } from './smtp-server-adapter.ts';
import { watchTlsFiles } from './tls-reload.ts';
import { type SessionState, Transaction } from './transaction.ts';

export interface InboundDeps {
  config: RelayConfig;
  spool: Spool;
  metrics: RelayMetrics;
  logger: Logger;
  /** A message is durably queued: hand it to delivery. */
  onQueued: (entry: QueueEntry) => void;
  /** ETRN: retry deferred mail now. */
  onEtrn: () => void;
  /** Pod/namespace of clients, when the relay runs in Kubernetes. */
  attribution?: Attribution;
  /** Rate limits shared with the relay's other replicas. */
  sharedRates?: ConstructorParameters<typeof PolicyGate>[3];
}

type Connection = FrontConnection<SessionState>;

/**
 * The inbound side: smtp-server with Postfix's replies, access control by client network,
 * message filtering (line endings, trace headers) and the durable hand-off to the spool.
 */
export class InboundServer {
  private readonly server: SMTPServer;
  private readonly networks: Networks;
  private readonly ehlo: EhloOptions;
  private readonly connections = new Set<Connection>();
  private readonly perAddress = new Map<string, number>();
  private draining = false;
  private transactions = 0;
  private idleWaiters: (() => void)[] = [];
  private readonly gate: PolicyGate;
  private stopTlsWatch: (() => void) | undefined;
  private readonly users: UserFile | undefined;
  private readonly slots: ConnectionSlots;

  constructor(private readonly deps: InboundDeps) {
    const { config } = deps;
    const smtp = config.smtp;
    this.networks = new Networks(config.access.allow);
    this.slots = new ConnectionSlots(smtp.maxClients);
    this.users = smtp.auth ? new UserFile(smtp.auth.usersFile) : undefined;
    this.gate = new PolicyGate(new PolicySet(config.policies), deps.metrics, deps.logger, deps.sharedRates);
    this.ehlo = { hostname: config.hostname, maxMessageSize: smtp.maxMessageSize, starttls: !!smtp.tls };
    const tls = smtp.tls
      ? { key: readFileSync(smtp.tls.keyFile), cert: readFileSync(smtp.tls.certFile) }
      : {};
    const options: FrontOptions = {
      ...tls,
      name: config.hostname,
      banner: '',
      heloResponse: '%s',
      size: smtp.maxMessageSize,
      maxClients: smtp.maxClients,
      maxRecipients: smtp.maxRecipients,
      maxCommandLength: smtp.maxCommandLength,
      hideENHANCEDSTATUSCODES: false,
      hideDSN: false,
      hideSTARTTLS: !smtp.tls,
      disabledCommands: [
        ...(smtp.auth ? [] : ['AUTH']),
        'WIZ',
        'SHELL',
        'KILL',
        ...(smtp.tls ? [] : ['STARTTLS']),
      ],
      authMethods: ['PLAIN', 'LOGIN'],
      authOptional: true,
      disableReverseLookup: true,
      socketTimeout: smtp.idleTimeoutSeconds * 1000,
      closeTimeout: config.shutdownGraceSeconds * 1000,
      logger: false,
    };
    this.server = createFrontServer<SessionState>(options, {
      newState: () => ({ counted: false }),
      reply: (code, data, context) => this.libraryReply(code, data, context),
      greet: (conn, ready) => this.greet(conn, ready),
      etrn: (conn, arg) => this.etrn(conn, arg),
      opened: (conn) => this.opened(conn),
      closed: (conn) => {
        this.connections.delete(conn);
        conn.state.guard?.stop();
        conn.state.release?.();
      },
      command: (conn) => conn.state.guard?.commandSeen(),
      onConnect: (conn, cb) => this.onConnect(conn, cb),
      onAuth: (auth, conn, cb) => this.onAuth(auth, conn, cb),
      onMailFrom: (address, conn, cb) => this.answer(this.mailFrom(address, conn), 'MAIL FROM', cb),
      onRcptTo: (address, conn, cb) => this.answer(this.rcptTo(address, conn), 'RCPT TO', cb),
      onData: (stream, conn, cb) => this.onData(stream, conn, cb),
      onClose: (conn) => this.onClose(conn),
    });
    this.server.on('error', (err) => deps.logger.warn({ err }, 'smtp server error'));
    if (smtp.tls) {
      this.stopTlsWatch = watchTlsFiles(
        smtp.tls,
        smtp.tls.reloadSeconds * 1000,
        (pair) => this.server.updateSecureContext(pair),
        deps.logger,
        tls as { key: Buffer; cert: Buffer },
      );
    }
  }

  /**
   * A reply smtp-server is about to send, in Postfix's words. Our own refusals were counted where
   * they were made (they carry their reason); the library's are counted here.
   */
  private libraryReply(
    code: number,
    data: string | string[] | null | undefined,
    context: string | false | undefined,
  ): Reply | undefined {
    const r = rewriteReply(code, data, context, this.ehlo);
    if (r?.reason) this.deps.metrics.rejections.inc({ reason: r.reason });
    return r;
  }

  /** Sends one of our replies on a connection (a refusal is counted under its reason). */
  private send(conn: Connection, reply: SmtpReplyError | Reply): void {
    const r = reply instanceof SmtpReplyError ? replyOf(reply) : reply;
    if (r.reason) this.deps.metrics.rejections.inc({ reason: r.reason });
    conn.reply(r.code, Array.isArray(r.text) ? r.text.join(' ') : r.text);
  }

  /** Counts a refusal handed to one of smtp-server's callbacks (it sends the reply). */
  private refused(err: SmtpReplyError): SmtpReplyError {
    this.deps.metrics.rejections.inc({ reason: err.reason });
    return err;
  }

  private opened(conn: Connection): void {
    this.connections.add(conn);
    conn.state.guard = guardCommands(conn, this.deps.config.smtp.idleTimeoutSeconds * 1000, () => {
      this.deps.logger.info(
        { client: normalizeAddress(conn.remoteAddress) },
        'command timeout: closing the session',
      );
      this.send(conn, replies.timeout());
    });
  }

  private greet(conn: Connection, ready: () => void): void {
    // Known without a lookup (an allowed network, or no Kubernetes attribution): greet in this
    // turn of the event loop, no promise and no setImmediate hop before the 220.
    const known = this.knownSlotClass(conn.remoteAddress);
    if (known) {
      this.admit(conn, known, ready);
      return;
    }
    this.slotClass(conn.remoteAddress).then(
      (cls) => this.admit(conn, cls, ready),
      (err: unknown) => {
        this.deps.logger.error({ err }, 'cannot classify a client');
        conn.destroy();
      },
    );
  }

  private admit(conn: Connection, cls: SlotClass, ready: () => void): void {
    const release = this.slots.take(cls);
    if (conn.gone()) {
      release?.(); // gone while we looked it up: the close handler already ran
      return;
    }
    if (!release) {
      this.send(conn, replies.portsBusy());
      return;
    }
    conn.state.release = release;
    // With a greet delay, smtp-server refuses a client that talks before the 220 (pregreet).
    const delay = this.deps.config.smtp.greetDelaySeconds * 1000;
    if (delay > 0) setTimeout(ready, delay).unref();
    else ready();
  }

  /** The slot class when no attribution lookup is needed to know it. */
  private knownSlotClass(remoteAddress: string): SlotClass | undefined {
    if (this.networks.contains(normalizeAddress(remoteAddress))) return 'inside';
    return this.deps.attribution ? undefined : 'outside';
  }

  /** Clients that may relay take maxClients' slots; the others a small pool of their own. */
  private async slotClass(remoteAddress: string): Promise<SlotClass> {
    const addr = normalizeAddress(remoteAddress);
    if (this.networks.contains(addr)) return 'inside';
    const att = this.deps.attribution;
    const pod = att ? await att.lookup(addr, 0) : undefined;
    return pod?.namespace && att?.admitted(pod.namespace) ? 'inside' : 'outside';
  }

  private etrn(conn: Connection, arg: string): void {
    if (!arg) this.send(conn, replies.etrnSyntax());
    else if (!this.networks.contains(conn.remoteAddress)) this.send(conn, replies.etrnDenied(arg));
    else {
      this.deps.onEtrn();
      this.send(conn, replies.etrnStarted());
    }
  }

  async listen(): Promise<AddressInfo> {
    const { host, port } = splitHostPort(this.deps.config.listen);
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error) => reject(err);
      this.server.server.once('error', onError);
      this.server.listen(port, host, () => {
        this.server.server.off('error', onError);
        resolve();
      });
    });
    return this.server.server.address() as AddressInfo;
  }

  /** Sessions open now. */
  activeConnections(): number {
    return this.connections.size;
  }

  /**
   * SIGTERM: new sessions get 421 4.3.2; idle sessions are closed with it; a session in the
   * middle of a transaction finishes it and is closed after its reply. Resolves when no
   * transaction is in flight or at the deadline (ms epoch).
   */
  async drain(deadline: number): Promise<void> {
    this.draining = true;
    for (const conn of this.connections) {
      if (!this.inTransaction(conn)) this.send(conn, replies.shuttingDown());
    }
    if (this.transactions > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.max(0, deadline - Date.now()));
        this.idleWaiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /**
   * Stops listening; every session still open (also one in DATA) hears 421 4.3.2. A client that
   * does not close its side by `deadline` (ms epoch) is cut off: the relay must exit before the
   * kubelet's SIGKILL, not wait out smtp-server's half-close timer.
   */
  async close(deadline = Date.now() + 1000): Promise<void> {
    this.stopTlsWatch?.();
    for (const conn of this.connections) this.send(conn, replies.shuttingDown());
    const closed = new Promise<void>((resolve) => this.server.server.close(() => resolve()));
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      closed,
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, Math.max(0, deadline - Date.now()));
      }),
    ]);
    clearTimeout(timer);
    for (const conn of this.connections) conn.destroy();
    await closed;
  }

  private inTransaction(conn: Connection): boolean {
    return !!conn.session.envelope?.mailFrom || conn.receiving();
  }

  private onConnect(conn: Connection, cb: (err?: Error | null) => void): void {
    const m = this.deps.metrics;
    if (this.draining) {
      cb(this.refused(replies.shuttingDown()));
      return;
    }
    const addr = normalizeAddress(conn.session.remoteAddress);
    const n = (this.perAddress.get(addr) ?? 0) + 1;
    this.perAddress.set(addr, n);
    conn.state.counted = true;
    m.connections.inc();
    m.connectionsActive.inc();
    if (n > this.deps.config.smtp.maxClientsPerAddress) {
      this.deps.logger.warn({ client: addr, connections: n }, 'too many connections from one address');
      cb(this.refused(replies.tooManyConnections(this.deps.config.hostname)));
      return;
    }
    cb();
  }

  private onClose(conn: Connection): void {
    if (!conn.state.counted) return;
    conn.state.counted = false;
    const addr = normalizeAddress(conn.session.remoteAddress);
    const n = (this.perAddress.get(addr) ?? 1) - 1;
    if (n <= 0) this.perAddress.delete(addr);
    else this.perAddress.set(addr, n);
    this.deps.metrics.connectionsActive.dec();
  }

  /** A check's refusal (or none) to smtp-server's callback; a check that throws is a local error (451). */
  private answer(
    check: Promise<SmtpReplyError | undefined>,
    command: string,
    cb: (err?: Error | null) => void,
  ): void {
    check.then(
      (refused) => cb(refused ? this.refused(refused) : null),
      (err: unknown) => {
        this.deps.logger.error({ err }, `${command} check failed`);
        cb(this.refused(replies.localError()));
      },
    );
  }

  /** MAIL FROM: the checks, then the transaction (client, policies, header edits) if accepted. */
  private async mailFrom(address: SMTPServerAddress, conn: Connection): Promise<SmtpReplyError | undefined> {
    const { smtp } = this.deps.config;
    const session = conn.session;
    const unknown = unsupportedParam(address.args, MAIL_PARAMS);
    if (unknown) return replies.unsupportedParam(unknown);
    if (address.address !== '' && !isFqdnAddress(address.address))
      return replies.nonFqdnSender(address.address);
    if (smtp.tls?.required && !session.secure) return replies.tlsRequired();
    const client = await this.identify(conn);
    const labels = client.namespace ? this.deps.attribution?.labels(client.namespace) : undefined;
    const policies = this.gate.policiesFor(client, labels);
    const declared = address.args ? address.args.SIZE : undefined;
    const refusal = this.gate.atMail(
      policies,
      client,
      address.address,
      typeof declared === 'string' ? Number(declared) : undefined,
    );
    if (refusal) return policyReply(refusal, 'mail', address.address);
    // Room for the declared size above the reserve (what is in flight already counted): else 452.
    const free = await this.deps.spool.headroom().catch(() => 0);
    if (free <= 0 || free < (Number(declared) || 0)) {
      this.deps.logger.error({ client: client.address }, 'spool is short of space: refusing mail');
      return replies.noStorage();
    }
    const edits = policies.length ? this.gate.headerEdits(policies, address.address) : undefined;
    conn.state.transaction = new Transaction(client, policies, address.address, edits);
    return undefined;
  }

  private async rcptTo(address: SMTPServerAddress, conn: Connection): Promise<SmtpReplyError | undefined> {
    const session = conn.session;
    const tx = conn.state.transaction;
    // smtp-server answers RCPT before an accepted MAIL FROM itself; this is only a safeguard.
    if (!tx) return replies.localError();
    const unknown = unsupportedParam(address.args, RCPT_PARAMS);
    if (unknown) return replies.unsupportedParam(unknown);
    const client = tx.client;
    const access = this.mayRelay(client);
    if (access !== 'yes') {
      this.deps.logger.warn(
        {
          client: client.address,
          namespace: client.namespace,
          pod: client.pod,
          from: session.envelope.mailFrom || undefined,
          to: address.address,
        },
        access === 'later' ? 'client not attributed yet: deferring' : 'relay access denied',
      );
      return access === 'later'
        ? replies.lookupFailure(address.address)
        : replies.relayDenied(address.address);
    }
    if (!isFqdnAddress(address.address)) return replies.nonFqdnRecipient(address.address);
    const refusal = this.gate.atRcpt(tx.policies, client, tx.sender, address.address, tx.recipients);
    if (refusal) return policyReply(refusal, 'rcpt', address.address);
    tx.recipients++;
    return undefined;
  }

  private onAuth(
    auth: SMTPServerAuthentication,
    conn: Connection,
    cb: (err: Error | null | undefined, response?: SMTPServerAuthenticationResponse) => void,
  ): void {
    const session = conn.session;
    const users = this.users;
    if (
      !users ||
      !auth.username ||
      typeof auth.password !== 'string' ||
      !['PLAIN', 'LOGIN'].includes(auth.method)
    ) {
      cb(this.refused(replies.authFailed()));
      return;
    }
    users.verify(auth.username, auth.password).then(
      (ok) => {
        const client = normalizeAddress(session.remoteAddress);
        if (!ok) {
          this.deps.logger.warn({ client, user: auth.username }, 'SMTP AUTH failed');
          return cb(this.refused(replies.authFailed()));
        }
        delete conn.state.client; // identity changed: look the client up again, with its user
        this.deps.logger.info({ client, user: auth.username }, 'SMTP AUTH succeeded');
        cb(null, { user: auth.username });
      },
      (err: unknown) => {
        this.deps.logger.error({ err }, 'cannot read the SMTP AUTH users file');
        cb(this.refused(replies.authUnavailable()));
      },
    );
  }

  /**
   * Never an open relay: a client inside the allowed networks, or a pod of a namespace that opted
   * in. 'later' while the Kubernetes watches have not synced yet (a temporary 4xx, not a 5xx).
   */
  private mayRelay(client: ClientInfo): 'yes' | 'no' | 'later' {
    if (client.user || this.networks.contains(client.address)) return 'yes';
    const att = this.deps.attribution;
    if (!att) return 'no';
    if (!att.synced()) return 'later';
    return client.namespace && att.admitted(client.namespace) ? 'yes' : 'no';
  }

  /** The client of a session, with its pod and namespace when Kubernetes attribution is on. */
  private async identify(conn: Connection): Promise<ClientInfo> {
    const known = conn.state.client;
    if (known) return known;
    const session = conn.session;
    const helo = session.hostNameAppearsAs;
    const user = typeof session.user === 'string' ? session.user : undefined;
    const client: ClientInfo = {
      address: normalizeAddress(session.remoteAddress),
      ...(helo ? { helo } : {}),
      ...(user ? { user } : {}),
    };
    const att = this.deps.attribution;
    if (att) {
      // A pod that mails right after it started may not be in the watch cache yet: wait a little.
      const wait = this.networks.contains(client.address)
        ? 0
        : this.deps.config.access.kubernetes.lookupWaitSeconds * 1000;
      const hit = await att.lookup(client.address, wait);
      if (hit) Object.assign(client, hit);
    }
    conn.state.client = client;
    return client;
  }

  private onData(
    stream: SMTPServerDataStream,
    conn: Connection,
    cb: (err?: Error | null, message?: string) => void,
  ): void {
    this.transactions++;
    const client = normalizeAddress(conn.session.remoteAddress);
    // smtp-server's idle timeout restarts with every byte; this bounds the whole DATA phase, so a
    // client trickling a byte at a time cannot hold a session (and a spool file) forever.
    const timer = setTimeout(() => {
      this.deps.logger.info({ client }, 'DATA timeout');
      this.send(conn, replies.timeout());
    }, this.deps.config.smtp.dataTimeoutSeconds * 1000);
    this.receive(stream, conn).then(
      ({ reply, afterReply }) => {
        clearTimeout(timer);
        // The 250 first (smtp-server writes it to the socket in this call), then the log line and
        // the hand-off to delivery, whose first steps would otherwise run before the reply.
        cb(null, reply);
        try {
          afterReply();
        } catch (err) {
          // Queued durably all the same: delivery finds it at the next start or queue flush.
          this.deps.logger.error({ err }, 'cannot hand a queued message to delivery');
        }
        this.transactionDone(conn);
      },
      (err: unknown) => {
        clearTimeout(timer);
        const e =
          err instanceof SmtpReplyError ? err : isSpoolFull(err) ? replies.noStorage() : replies.localError();
        if (isSpoolFull(err)) {
          this.deps.logger.error({ err }, 'spool is short of space: refused a message in DATA');
        } else if (!(err instanceof SmtpReplyError) && !isConnectionGone(err)) {
          this.deps.logger.error({ err }, 'queue write failed');
        }
        this.deps.logger.info({ client, reason: e.reason }, `refused: ${e.message}`);
        cb(this.refused(e));
        this.transactionDone(conn);
      },
    );
  }

  private transactionDone(conn: Connection): void {
    this.transactions--;
    delete conn.state.transaction;
    if (this.draining) {
      // Close the session once its reply is out: it gets its 250, then the 421.
      setImmediate(() => this.send(conn, replies.shuttingDown()));
      if (this.transactions === 0) for (const w of this.idleWaiters.splice(0)) w();
    }
  }

  /**
   * Streams one message into the spool; resolves with the 250 text and what to do once it is
   * sent (log, hand to delivery), or rejects with a reply.
   */
  private async receive(
    stream: SMTPServerDataStream,
    conn: Connection,
  ): Promise<{ reply: string; afterReply: () => void }> {
    const { config, spool, logger, metrics } = this.deps;
    const session = conn.session;
    const tx = conn.state.transaction;
    if (!tx) throw replies.localError(); // smtp-server refuses DATA before an accepted MAIL FROM
    const envelope = session.envelope;
    const rcpts = envelope.rcptTo;
    const { client, policies, sender, edits } = tx;
    const mailArgs = envelope.mailFrom ? (envelope.mailFrom.args as { SIZE?: string } | false) : false;
    const declaredSize = (mailArgs && Number(mailArgs.SIZE)) || 0;
    const writer = await spool.begin({ declaredSize });
    const id = writer.id;
    const filter = new MessageFilter({
      bareLineEndings: config.smtp.bareLineEndings,
      maxLineLength: config.smtp.maxLineLength,
      maxHeaderBytes: config.smtp.maxHeaderBytes,
      received: receivedHeader({
        heloName: session.hostNameAppearsAs || undefined,
        clientAddress: normalizeAddress(session.remoteAddress),
        hostname: config.hostname,
        protocol: session.transmissionType || 'ESMTP',
        id,
        ...(rcpts.length === 1 ? { recipient: rcpts[0]!.address } : {}),
        date: new Date(),
      }),
      ...(policies.length
        ? {
            onHeaders: (block: string) => {
              tx.refusal = this.gate.atHeaders(policies, client, block);
              return edits ? this.gate.editHeaders(block, edits) : block;
            },
          }
        : {}),
      ...(config.smtp.addMissingFrom ? { missingFrom: () => missingFromAddress(sender, edits, config) } : {}),
      // randomUUID draws from Node's cached entropy; randomBytes was a call into OpenSSL per message.
      makeMessageId: () => `<${Date.now().toString(36)}.${randomUUID().slice(-12)}@${config.hostname}>`,
    });
    const max = this.gate.maxSize(policies, config.smtp.maxMessageSize);
    let oversized = false;
    let full: unknown;
    try {
      for await (const chunk of stream as AsyncIterable<Buffer>) {
        // Refused (too big, by its From: header, or no room): read on to the final dot, store nothing more.
        if (oversized || tx.refusal || full) continue;
        if (stream.sizeExceeded || (stream.byteLength ?? 0) > max.limit) {
          oversized = true;
          continue;
        }
        const out = filter.push(chunk);
        if (tx.refusal) continue; // the header block just ended: not a byte of this message is stored
        try {
          for (const b of out) await writer.write(b);
        } catch (err) {
          if (!isSpoolFull(err)) throw err;
          full = err; // answered 452 4.3.1 after the final dot
        }
      }
      if (full) throw full;
      // A stream destroyed by a vanished client may end the loop quietly: never commit half a message.
      if (!stream.readableEnded)
        throw Object.assign(new Error('client went away during DATA'), { code: 'ECONNECTION' });
      if (stream.sizeExceeded || (stream.byteLength ?? 0) > max.limit) oversized = true;
      if (!oversized && !tx.refusal) {
        const out = filter.end();
        if (!tx.refusal) for (const b of out) await writer.write(b);
      }
      const endOfData = process.hrtime.bigint();
      if (oversized) {
        if (max.policy) this.gate.sizeRefused(max.policy, client);
        throw replies.tooBig();
      }
      if (tx.refusal) throw policyReply(tx.refusal, 'data');
      if (filter.bareLineEnding && config.smtp.bareLineEndings === 'reject') throw replies.bareLineEnding();
      if (filter.lineTooLong) throw replies.lineTooLong();
      if (filter.headerTooLong) throw replies.headerTooLong();
      const rewrite = edits?.rewriteSender;
      const meta: NewMessage = {
        // A bounce keeps its null sender; anything else may be rewritten to a registered sender.
        from: rewrite && sender ? rewrite.to : sender,
        recipients: rcpts.map(toRecipient),
        dsn: dsnOf(envelope),
        client,
        ...(filter.messageId ? { messageId: filter.messageId } : {}),
        bodyType: envelope.bodyType === '8bitmime' ? '8BITMIME' : '7BIT',
        smtputf8: !!envelope.smtpUtf8,
      };
      const queued = await writer.commit(meta);
      this.gate.committed(policies, client, sender, meta.recipients.length);
      metrics.acceptDuration.observe(Number(process.hrtime.bigint() - endOfData) / 1e9);
      metrics.messagesReceived.inc();
      metrics.bytesReceived.inc(queued.size);
      const afterReply = () => {
        logger.info(
          {
            queueId: queued.id,
            messageId: meta.messageId,
            from: meta.from,
            to: meta.recipients.map((r) => r.address),
            originalFrom: meta.from !== sender ? sender : undefined,
            namespace: client.namespace,
            pod: client.pod,
            size: queued.size,
            client: meta.client.address,
            normalized: filter.bareLineEnding || undefined,
          },
          'queued',
        );
        this.deps.onQueued({
          id: queued.id,
          size: queued.size,
          receivedAt: queued.receivedAt,
          nextAttemptAt: queued.nextAttemptAt,
        });
      };
      return { reply: replies.queued(queued.id), afterReply };
    } catch (err) {
      await writer.abort().catch(() => undefined);
      throw err;
    }
  }
}

function isConnectionGone(err: unknown): boolean {
  return err instanceof Error && 'code' in err && err.code === 'ECONNECTION';
}

const MAIL_PARAMS = new Set(['SIZE', 'BODY', 'SMTPUTF8', 'RET', 'ENVID']);
const RCPT_PARAMS = new Set(['NOTIFY', 'ORCPT']);

/** The first MAIL/RCPT parameter we do not implement (Postfix answers those with 555), if any. */
function unsupportedParam(args: SMTPServerAddress['args'], known: Set<string>): string | undefined {
  if (!args) return undefined;
  for (const [k, v] of Object.entries(args)) {
    if (!known.has(k.toUpperCase())) return v === true ? k : `${k}=${String(v)}`;
  }
  return undefined;
}

/**
 * The From: added to a message that has none: the envelope sender as stored (after a policy's
 * sender rewrite), or MAILER-DAEMON@hostname for the null sender, as Postfix's cleanup does.
 */
function missingFromAddress(sender: string, edits: HeaderEdits | undefined, config: RelayConfig): string {
  const rewrite = edits?.rewriteSender;
  if (!sender) return `MAILER-DAEMON@${config.hostname}`;
  return rewrite ? rewrite.to : sender;
}

/** user@domain.tld or user@[literal]: a relay cannot route "user" or "user@localhost" anywhere sensible. */
export function isFqdnAddress(address: string): boolean {
  const at = address.lastIndexOf('@');
  if (at <= 0 || at === address.length - 1) return false;
  const domain = address.slice(at + 1);
  if (/^\[[^\]]+\]$/.test(domain)) return true;
  return /^[^.\s]+(\.[^.\s]+)+\.?$/.test(domain);
}

function toRecipient(r: SMTPServerAddress): RecipientInput {
  const out: RecipientInput = { address: r.address };
  if (r.dsn?.notify) out.notify = r.dsn.notify as RecipientInput['notify'];
  if (r.dsn?.orcpt) out.orcpt = r.dsn.orcpt;
  return out;
}

function dsnOf(envelope: SMTPServerEnvelope): NewMessage['dsn'] {
  const d = envelope.dsn;
  const out: NonNullable<NewMessage['dsn']> = {};
  if (d?.ret === 'FULL' || d?.ret === 'HDRS') out.ret = d.ret;
  if (d?.envid) out.envid = d.envid;
  return out;
}
