import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { AddressInfo, Socket } from 'node:net';
import {
  SMTPServer,
  type SMTPServerDataStream,
  type SMTPServerOptions,
  type SMTPServerSession,
} from 'smtp-server';
import { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';
import type { Policy } from '../../config/policy.ts';
import type { RelayConfig } from '../../config/schema.ts';
import { splitHostPort } from '../../lib/host-port.ts';
import type { Logger } from '../../lib/logger.ts';
import type { Attribution } from '../access/attribution.ts';
import { Networks, normalizeAddress } from '../access/networks.ts';
import { PolicySet } from '../access/policy.ts';
import type { RelayMetrics } from '../metrics.ts';
import type { ClientInfo, NewMessage, QueueEntry, RecipientInput, Spool } from '../spool/types.ts';
import { UserFile } from './auth.ts';
import { MessageFilter, receivedHeader } from './message-filter.ts';
import { PolicyGate } from './policy-gate.ts';
import { type EhloOptions, replies, rewriteReply, SmtpReplyError } from './replies.ts';
import { ConnectionSlots, type GuardedConnection, guardCommands, type SlotClass } from './session-guard.ts';
import { watchTlsFiles } from './tls-reload.ts';

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
}

/** The parts of smtp-server's connection object the relay reaches into (it has no public hooks for these). */
interface Connection {
  send(code: number, data?: unknown, context?: unknown): void;
  close(): void;
  init(): void;
  on(event: string, fn: (arg: unknown) => void): void;
  remoteAddress: string;
  _socket: Socket;
  session: SMTPServerSession;
  secure: boolean;
  _dataStream: unknown;
  _setListeners(cb: () => void): void;
  connectionReady(): void;
  _server: { options: SMTPServerOptions; connections: Set<unknown> };
  handler_ETRN?: (command: Buffer | string, callback: () => void) => void;
}

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
  /** The policies that apply to a session's current transaction, decided at MAIL FROM. */
  private readonly sessionPolicies = new WeakMap<SMTPServerSession, Policy[]>();
  private readonly clients = new WeakMap<SMTPServerSession, ClientInfo>();
  private stopTlsWatch: (() => void) | undefined;
  private readonly users: UserFile | undefined;
  private readonly slots: ConnectionSlots;

  constructor(private readonly deps: InboundDeps) {
    const { config } = deps;
    const smtp = config.smtp;
    this.networks = new Networks(config.access.allow);
    this.slots = new ConnectionSlots(smtp.maxClients);
    this.users = smtp.auth ? new UserFile(smtp.auth.usersFile) : undefined;
    this.gate = new PolicyGate(new PolicySet(config.policies), deps.metrics, deps.logger);
    this.ehlo = { hostname: config.hostname, maxMessageSize: smtp.maxMessageSize, starttls: !!smtp.tls };
    const tls = smtp.tls
      ? { key: readFileSync(smtp.tls.keyFile), cert: readFileSync(smtp.tls.certFile) }
      : {};
    const options: SMTPServerOptions = {
      ...tls,
      name: config.hostname,
      banner: '',
      heloResponse: '%s',
      size: smtp.maxMessageSize,
      maxClients: smtp.maxClients,
      // biome-ignore lint/suspicious/noExplicitAny: option missing from @types/smtp-server
      ...({ maxRecipients: smtp.maxRecipients, maxCommandLength: smtp.maxCommandLength } as any),
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
      onAuth: (auth, session, cb) => this.onAuth(auth, session, cb),
      disableReverseLookup: true,
      socketTimeout: smtp.idleTimeoutSeconds * 1000,
      closeTimeout: config.shutdownGraceSeconds * 1000,
      logger: false,
      onConnect: (session, cb) => this.onConnect(session, cb),
      onMailFrom: (address, session, cb) => this.onMailFrom(address, session, cb),
      onRcptTo: (address, session, cb) => this.onRcptTo(address, session, cb),
      onData: (stream, session, cb) => this.onData(stream, session, cb),
      onClose: (session) => this.onClose(session),
    };
    this.server = new SMTPServer(options);
    // smtp-server builds one connection object per socket; take over that step to translate
    // replies, add ETRN, and greet without the library's fixed 100 ms early-talker delay.
    this.server.connect = (socket: Socket, socketOptions: unknown) => this.connect(socket, socketOptions);
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

  private connect(socket: Socket, socketOptions: unknown): void {
    socket.setNoDelay(true);
    const server = this.server as unknown as {
      connections: Set<unknown>;
      _onError(err: unknown): void;
      _onClientConnect(data: unknown): void;
    };
    const conn = new (SMTPConnection as unknown as new (s: unknown, so: Socket, o: unknown) => Connection)(
      this.server,
      socket,
      socketOptions,
    );
    server.connections.add(conn);
    this.connections.add(conn);
    conn.on('error', (err) => server._onError(err));
    conn.on('connect', (data) => server._onClientConnect(data));
    socket.once('close', () => this.connections.delete(conn));

    const send = conn.send.bind(conn);
    conn.send = (code: number, data?: unknown, context?: unknown) => {
      const r = rewriteReply(code, data, context, this.ehlo);
      if (!r) return send(code, data, context);
      if (r.code >= 400) this.deps.metrics.rejections.inc({ reason: reasonOf(r.code, r.text) });
      return send(r.code, r.text, false);
    };
    conn.handler_ETRN = (command, callback) => this.etrn(conn, command.toString(), callback);
    const unguard = guardCommands(
      conn as unknown as GuardedConnection,
      this.deps.config.smtp.idleTimeoutSeconds * 1000,
      () => {
        this.deps.logger.info(
          { client: normalizeAddress(conn.remoteAddress) },
          'command timeout: closing the session',
        );
        const r = replies.timeout();
        conn.send(r.responseCode, r.message, false);
      },
    );
    let release: (() => void) | undefined;
    socket.once('close', () => {
      unguard();
      release?.();
    });
    conn.init = () => {
      conn._setListeners(async () => {
        const cls = await this.slotClass(conn.remoteAddress);
        release = this.slots.take(cls);
        if (socket.destroyed) return release?.(); // gone while we looked it up: the close handler already ran
        if (!release) {
          const r = replies.portsBusy();
          return conn.send(r.responseCode, r.message, false);
        }
        // With a greet delay, smtp-server refuses a client that talks before the 220 (pregreet).
        const delay = this.deps.config.smtp.greetDelaySeconds * 1000;
        if (delay > 0) setTimeout(() => conn.connectionReady(), delay).unref();
        else setImmediate(() => conn.connectionReady());
      });
    };
    conn.init();
  }

  /** Clients that may relay take maxClients' slots; the others a small pool of their own. */
  private async slotClass(remoteAddress: string): Promise<SlotClass> {
    const addr = normalizeAddress(remoteAddress);
    if (this.networks.contains(addr)) return 'inside';
    const att = this.deps.attribution;
    const pod = att ? await att.lookup(addr, 0) : undefined;
    return pod?.namespace && att!.admitted(pod.namespace) ? 'inside' : 'outside';
  }

  private etrn(conn: Connection, command: string, callback: () => void): void {
    const arg = command.trim().split(/\s+/)[1];
    if (!arg) conn.send(501, '5.5.4 Syntax: ETRN domain', false);
    else if (!this.networks.contains(conn.remoteAddress))
      conn.send(554, `5.7.1 <${arg}>: Relay access denied`, false);
    else {
      this.deps.onEtrn();
      conn.send(250, '2.0.0 Queuing started', false);
    }
    callback();
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
      if (!this.inTransaction(conn)) conn.send(421, '4.3.2 Service shutting down', false);
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
    const r = replies.shuttingDown();
    for (const conn of this.connections) conn.send(r.responseCode, r.message, false);
    const closed = new Promise<void>((resolve) => this.server.server.close(() => resolve()));
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      closed,
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, Math.max(0, deadline - Date.now()));
      }),
    ]);
    clearTimeout(timer);
    for (const conn of this.connections) conn._socket.destroy();
    await closed;
  }

  private inTransaction(conn: Connection): boolean {
    return !!conn.session.envelope?.mailFrom || !!conn._dataStream;
  }

  private onConnect(session: SMTPServerSession, cb: (err?: Error | null) => void): void {
    const m = this.deps.metrics;
    if (this.draining) {
      cb(replies.shuttingDown());
      return;
    }
    const addr = normalizeAddress(session.remoteAddress);
    const n = (this.perAddress.get(addr) ?? 0) + 1;
    this.perAddress.set(addr, n);
    (session as SessionExtra).counted = true;
    m.connections.inc();
    m.connectionsActive.inc();
    if (n > this.deps.config.smtp.maxClientsPerAddress) {
      this.deps.logger.warn({ client: addr, connections: n }, 'too many connections from one address');
      cb(replies.tooManyConnections(this.deps.config.hostname));
      return;
    }
    cb();
  }

  private onClose(session: SMTPServerSession): void {
    if (!(session as SessionExtra).counted) return;
    (session as SessionExtra).counted = false;
    const addr = normalizeAddress(session.remoteAddress);
    const n = (this.perAddress.get(addr) ?? 1) - 1;
    if (n <= 0) this.perAddress.delete(addr);
    else this.perAddress.set(addr, n);
    this.deps.metrics.connectionsActive.dec();
  }

  private onMailFrom(
    address: { address: string; args?: unknown },
    session: SMTPServerSession,
    cb: (err?: Error | null) => void,
  ): void {
    this.answer(this.mailFrom(address, session), 'MAIL FROM', cb);
  }

  /** A check's refusal (or none) to smtp-server's callback; a check that throws is a local error (451). */
  private answer(
    check: Promise<SmtpReplyError | undefined>,
    command: string,
    cb: (err?: Error | null) => void,
  ): void {
    check.then(
      (refused) => cb(refused ?? null),
      (err: unknown) => {
        this.deps.logger.error({ err }, `${command} check failed`);
        cb(replies.localError());
      },
    );
  }

  private async mailFrom(
    address: { address: string; args?: unknown },
    session: SMTPServerSession,
  ): Promise<SmtpReplyError | undefined> {
    const { smtp } = this.deps.config;
    const unknown = unsupportedParam(address.args, MAIL_PARAMS);
    if (unknown) return replies.unsupportedParam(unknown);
    if (address.address !== '' && !isFqdnAddress(address.address))
      return replies.nonFqdnSender(address.address);
    if (smtp.tls?.required && !session.secure) return replies.tlsRequired();
    const client = await this.identify(session);
    const labels = client.namespace ? this.deps.attribution?.labels(client.namespace) : undefined;
    const policies = this.gate.policiesFor(client, labels);
    this.sessionPolicies.set(session, policies);
    const declared = (address.args as { SIZE?: string } | undefined)?.SIZE;
    const refused = this.gate.atMail(
      policies,
      client,
      address.address,
      declared ? Number(declared) : undefined,
    );
    if (refused) return refused;
    const free = await this.deps.spool.headroom().catch(() => 0);
    if (free > 0) return undefined;
    this.deps.logger.error({ client: client.address }, 'spool is short of space: refusing mail');
    return replies.noStorage();
  }

  private onRcptTo(
    address: { address: string; args?: unknown },
    session: SMTPServerSession,
    cb: (err?: Error | null) => void,
  ): void {
    this.answer(this.rcptTo(address, session), 'RCPT TO', cb);
  }

  private async rcptTo(
    address: { address: string; args?: unknown },
    session: SMTPServerSession,
  ): Promise<SmtpReplyError | undefined> {
    const unknown = unsupportedParam(address.args, RCPT_PARAMS);
    if (unknown) return replies.unsupportedParam(unknown);
    const client = await this.identify(session);
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
    const policies = this.sessionPolicies.get(session) ?? [];
    const sender = session.envelope.mailFrom ? session.envelope.mailFrom.address : '';
    return this.gate.atRcpt(policies, client, sender, address.address, session.envelope.rcptTo.length);
  }

  private onAuth(
    auth: { method: string; username?: string | null; password?: string | null },
    session: SMTPServerSession,
    cb: (err: Error | null | undefined, response?: { user?: unknown }) => void,
  ): void {
    const users = this.users;
    if (
      !users ||
      !auth.username ||
      typeof auth.password !== 'string' ||
      !['PLAIN', 'LOGIN'].includes(auth.method)
    ) {
      cb(replies.authFailed());
      return;
    }
    users.verify(auth.username, auth.password).then(
      (ok) => {
        const client = normalizeAddress(session.remoteAddress);
        if (!ok) {
          this.deps.logger.warn({ client, user: auth.username }, 'SMTP AUTH failed');
          return cb(replies.authFailed());
        }
        this.clients.delete(session); // identity changed: look the client up again, with its user
        this.deps.logger.info({ client, user: auth.username }, 'SMTP AUTH succeeded');
        cb(null, { user: auth.username });
      },
      (err: unknown) => {
        this.deps.logger.error({ err }, 'cannot read the SMTP AUTH users file');
        cb(new SmtpReplyError(454, '4.7.0 Temporary authentication failure', 'auth_unavailable'));
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
  private async identify(session: SMTPServerSession): Promise<ClientInfo> {
    const known = this.clients.get(session);
    if (known) return known;
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
    this.clients.set(session, client);
    return client;
  }

  private onData(
    stream: SMTPServerDataStream,
    session: SMTPServerSession,
    cb: (err?: Error | null, message?: string) => void,
  ): void {
    this.transactions++;
    // smtp-server's idle timeout restarts with every byte; this bounds the whole DATA phase, so a
    // client trickling a byte at a time cannot hold a session (and a spool file) forever.
    const timer = setTimeout(() => {
      for (const conn of this.connections) {
        if (conn.session !== session) continue;
        this.deps.logger.info({ client: normalizeAddress(session.remoteAddress) }, 'DATA timeout');
        conn.send(421, '4.4.2 Error: timeout exceeded', false);
      }
    }, this.deps.config.smtp.dataTimeoutSeconds * 1000);
    this.receive(stream, session).then(
      (reply) => {
        clearTimeout(timer);
        cb(null, reply);
        this.transactionDone(session);
      },
      (err: unknown) => {
        clearTimeout(timer);
        const e = err instanceof SmtpReplyError ? err : replies.localError();
        if (!(err instanceof SmtpReplyError) && (err as NodeJS.ErrnoException).code !== 'ECONNECTION') {
          this.deps.logger.error({ err }, 'queue write failed');
        }
        this.deps.logger.info(
          { client: normalizeAddress(session.remoteAddress), reason: e.reason },
          `refused: ${e.message}`,
        );
        cb(e);
        this.transactionDone(session);
      },
    );
  }

  private transactionDone(session: SMTPServerSession): void {
    this.transactions--;
    if (this.draining) {
      // Close the session once its reply is out: it gets its 250, then the 421.
      setImmediate(() => {
        for (const conn of this.connections)
          if (conn.session === session) conn.send(421, '4.3.2 Service shutting down', false);
      });
      if (this.transactions === 0) for (const w of this.idleWaiters.splice(0)) w();
    }
  }

  /** Streams one message into the spool; resolves with the 250 text or rejects with a reply. */
  private async receive(stream: SMTPServerDataStream, session: SMTPServerSession): Promise<string> {
    const { config, spool, logger, metrics } = this.deps;
    const envelope = session.envelope;
    const rcpts = envelope.rcptTo;
    const client = await this.identify(session);
    const policies = this.sessionPolicies.get(session) ?? [];
    const sender = envelope.mailFrom ? envelope.mailFrom.address : '';
    const headers = policies.length ? this.gate.headerHook(policies, sender) : undefined;
    const writer = await spool.begin();
    const id = writer.id;
    const filter = new MessageFilter({
      bareLineEndings: config.smtp.bareLineEndings,
      maxLineLength: config.smtp.maxLineLength,
      maxHeaderBytes: config.smtp.maxHeaderBytes,
      received: receivedHeader({
        heloName: (session as SessionExtra).hostNameAppearsAs || undefined,
        clientAddress: normalizeAddress(session.remoteAddress),
        hostname: config.hostname,
        protocol: session.transmissionType || 'ESMTP',
        id,
        ...(rcpts.length === 1 ? { recipient: rcpts[0]!.address } : {}),
        date: new Date(),
      }),
      ...(headers ? { onHeaders: headers.hook } : {}),
      ...(config.smtp.addMissingFrom
        ? { missingFrom: () => missingFromAddress(sender, headers, config) }
        : {}),
      makeMessageId: () =>
        `<${Date.now().toString(36)}.${randomBytes(6).toString('hex')}@${config.hostname}>`,
    });
    const max = this.gate.maxSize(policies, config.smtp.maxMessageSize);
    let oversized = false;
    try {
      for await (const chunk of stream as AsyncIterable<Buffer>) {
        if (oversized) continue; // keep reading to the final dot, store nothing more
        if (stream.sizeExceeded || (stream.byteLength ?? 0) > max.limit) {
          oversized = true;
          continue;
        }
        for (const b of filter.push(chunk)) await writer.write(b);
      }
      // A stream destroyed by a vanished client may end the loop quietly: never commit half a message.
      if (!stream.readableEnded)
        throw Object.assign(new Error('client went away during DATA'), { code: 'ECONNECTION' });
      if (stream.sizeExceeded || (stream.byteLength ?? 0) > max.limit) oversized = true;
      if (!oversized) for (const b of filter.end()) await writer.write(b);
      const endOfData = process.hrtime.bigint();
      if (oversized) {
        if (max.policy) this.gate.sizeRefused(max.policy, client);
        throw replies.tooBig();
      }
      if (headers?.result.refusal) throw this.gate.fromRefused(headers.result.refusal, client);
      if (filter.bareLineEnding && config.smtp.bareLineEndings === 'reject') throw replies.bareLineEnding();
      if (filter.lineTooLong) throw replies.lineTooLong();
      if (filter.headerTooLong) throw replies.headerTooLong();
      const rewrite = headers?.edits.rewriteSender;
      const meta: NewMessage = {
        // A bounce keeps its null sender; anything else may be rewritten to a registered sender.
        from: rewrite && sender ? rewrite.to : sender,
        recipients: rcpts.map(toRecipient),
        dsn: dsnOf(envelope),
        client,
        ...(filter.messageId ? { messageId: filter.messageId } : {}),
        bodyType: (envelope as EnvelopeExtra).bodyType === '8bitmime' ? '8BITMIME' : '7BIT',
        smtputf8: !!(envelope as EnvelopeExtra).smtpUtf8,
      };
      const queued = await writer.commit(meta);
      this.gate.committed(policies, client, sender, meta.recipients.length);
      metrics.acceptDuration.observe(Number(process.hrtime.bigint() - endOfData) / 1e9);
      metrics.messagesReceived.inc();
      metrics.bytesReceived.inc(queued.size);
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
      return replies.queued(queued.id);
    } catch (err) {
      await writer.abort().catch(() => undefined);
      throw err;
    }
  }
}

interface SessionExtra extends SMTPServerSession {
  counted?: boolean;
}
interface EnvelopeExtra {
  bodyType?: string;
  smtpUtf8?: boolean;
  dsn?: { ret?: string; envid?: string };
}

const MAIL_PARAMS = new Set(['SIZE', 'BODY', 'SMTPUTF8', 'RET', 'ENVID']);
const RCPT_PARAMS = new Set(['NOTIFY', 'ORCPT']);

/** The first MAIL/RCPT parameter we do not implement (Postfix answers those with 555), if any. */
function unsupportedParam(args: unknown, known: Set<string>): string | undefined {
  if (!args || typeof args !== 'object') return undefined;
  for (const [k, v] of Object.entries(args)) {
    if (!known.has(k.toUpperCase())) return v === true ? k : `${k}=${String(v)}`;
  }
  return undefined;
}

/**
 * The From: added to a message that has none: the envelope sender as stored (after a policy's
 * sender rewrite), or MAILER-DAEMON@hostname for the null sender, as Postfix's cleanup does.
 */
function missingFromAddress(
  sender: string,
  headers: { edits: { rewriteSender?: { to: string } } } | undefined,
  config: RelayConfig,
): string {
  const rewrite = headers?.edits.rewriteSender;
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

function toRecipient(r: { address: string; dsn?: { notify?: string[]; orcpt?: string } }): RecipientInput {
  const out: RecipientInput = { address: r.address };
  if (r.dsn?.notify) out.notify = r.dsn.notify as RecipientInput['notify'];
  if (r.dsn?.orcpt) out.orcpt = r.dsn.orcpt;
  return out;
}

function dsnOf(envelope: SMTPServerSession['envelope']): NewMessage['dsn'] {
  const d = (envelope as EnvelopeExtra).dsn;
  const out: NonNullable<NewMessage['dsn']> = {};
  if (d?.ret === 'FULL' || d?.ret === 'HDRS') out.ret = d.ret;
  if (d?.envid) out.envid = d.envid;
  return out;
}

/** Label for the rejections metric, from the reply itself: every refusal passes the send wrapper once. */
function reasonOf(code: number, text: string | string[]): string {
  const t = Array.isArray(text) ? '' : text;
  if (t.includes('Relay access denied')) return 'relay_denied';
  if (t.includes('fully-qualified')) return 'non_fqdn';
  if (t.includes('header size')) return 'header_size';
  if (t.includes('line too long')) return 'line_length';
  if (t.startsWith('5.3.4')) return 'size';
  if (t.startsWith('4.3.1')) return 'storage';
  if (t.startsWith('4.5.3')) return 'recipients';
  if (t.includes('too many connections') || t.includes('ports are busy')) return 'connection_limit';
  if (t.startsWith('4.3.2')) return 'shutdown';
  if (t.startsWith('4.4.2')) return 'timeout';
  if (t.startsWith('5.5.2 Error: bare')) return 'bare_line_ending';
  if (code >= 500 && code < 510) return 'syntax';
  return `code_${code}`;
}
