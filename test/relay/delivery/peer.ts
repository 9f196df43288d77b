import type { AddressInfo } from 'node:net';
import { SMTPServer, type SMTPServerAuthentication, type SMTPServerSession } from 'smtp-server';

/**
 * A scripted upstream built on smtp-server: a real SMTP peer whose replies the test decides per
 * connection, sender or recipient (mixed 250/451/550 in one transaction, 421 at connect, 452,
 * AUTH). Every accepted message is recorded with its envelope.
 */

export interface PeerMessage {
  from: string;
  to: string[];
  /** DSN parameters as the peer parsed them. */
  dsn: {
    ret?: string | null;
    envid?: string | null;
    rcpt: Record<string, { notify?: string[]; orcpt?: string }>;
  };
  raw: string;
  user?: string;
}

export interface PeerAuth {
  method: string;
  username?: string;
  password?: string;
  accessToken?: string;
}

export interface PeerOptions {
  /** Listen on this port (default: any free one). */
  port?: number;
  /** Implicit TLS (smtps) with smtp-server's built-in self-signed certificate. */
  secure?: boolean;
  /** Advertise STARTTLS (smtp-server's built-in certificate). Default false. */
  starttls?: boolean;
  authMethods?: string[];
  /** Accept these credentials; when set, AUTH is required before MAIL. */
  checkAuth?: (a: PeerAuth) => boolean;
  /** A reply ("421 4.7.0 ...") refuses the connection at the greeting. */
  onConnect?: (n: number) => string | undefined;
  /** A reply refuses the recipient. */
  onRcpt?: (address: string, n: number) => string | undefined;
  onMail?: (address: string) => string | undefined;
  hideDSN?: boolean;
}

export interface Peer {
  port: number;
  url: string;
  messages: PeerMessage[];
  connections: number;
  auths: PeerAuth[];
  ehloNames: string[];
  close(): Promise<void>;
}

function smtpError(reply: string): Error & { responseCode: number } {
  const m = /^(\d{3})\s+(.*)$/.exec(reply);
  return Object.assign(new Error(m?.[2] ?? reply), { responseCode: Number(m?.[1] ?? 451) });
}

export async function startPeer(opts: PeerOptions = {}): Promise<Peer> {
  const peer: Omit<Peer, 'port' | 'url' | 'close'> = {
    messages: [],
    connections: 0,
    auths: [],
    ehloNames: [],
  };
  const rcptCount = new Map<string, number>();
  const server = new SMTPServer({
    secure: opts.secure ?? false,
    disabledCommands: [
      ...(opts.starttls || opts.secure ? [] : ['STARTTLS']),
      ...(opts.checkAuth ? [] : ['AUTH']),
    ],
    authMethods: opts.authMethods ?? ['PLAIN', 'LOGIN'],
    authOptional: !opts.checkAuth,
    allowInsecureAuth: true,
    hideDSN: opts.hideDSN ?? false,
    logger: false,
    size: 50 * 1024 * 1024,
    onConnect(_session, cb) {
      peer.connections++;
      const reply = opts.onConnect?.(peer.connections);
      cb(reply ? smtpError(reply) : undefined);
    },
    onAuth(auth: SMTPServerAuthentication, _session, cb) {
      const a: PeerAuth = {
        method: auth.method,
        ...(auth.username !== undefined ? { username: auth.username } : {}),
        ...(typeof auth.password === 'string' ? { password: auth.password } : {}),
        ...(auth.accessToken !== undefined ? { accessToken: auth.accessToken } : {}),
      };
      peer.auths.push(a);
      if (opts.checkAuth?.(a)) return cb(null, { user: a.username ?? 'user' });
      if (auth.method === 'XOAUTH2')
        return cb(null, { data: { status: '401', schemes: 'bearer', scope: 'mail' } });
      return cb(Object.assign(new Error('Invalid username or password'), { responseCode: 535 }));
    },
    onMailFrom(address, session, cb) {
      if (session.hostNameAppearsAs) peer.ehloNames.push(session.hostNameAppearsAs);
      const reply = opts.onMail?.(address.address);
      cb(reply ? smtpError(reply) : undefined);
    },
    onRcptTo(address, _session, cb) {
      const n = (rcptCount.get(address.address) ?? 0) + 1;
      rcptCount.set(address.address, n);
      const reply = opts.onRcpt?.(address.address, n);
      cb(reply ? smtpError(reply) : undefined);
    },
    onData(stream, session: SMTPServerSession, cb) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        const env = session.envelope as SMTPServerSession['envelope'] & {
          dsn?: { ret?: string | null; envid?: string | null };
        };
        const rcpt: PeerMessage['dsn']['rcpt'] = {};
        for (const r of env.rcptTo) {
          const d = (r as { dsn?: { notify?: string[]; orcpt?: string } }).dsn;
          if (d) rcpt[r.address] = d;
        }
        peer.messages.push({
          from: env.mailFrom ? env.mailFrom.address : '',
          to: env.rcptTo.map((r) => r.address),
          dsn: { ret: env.dsn?.ret ?? null, envid: env.dsn?.envid ?? null, rcpt },
          raw: Buffer.concat(chunks).toString(),
          ...(session.user ? { user: String(session.user) } : {}),
        });
        cb(null, 'OK: queued');
      });
    },
  });
  server.on('error', () => {});
  await new Promise<void>((resolve) => server.listen(opts.port ?? 0, '127.0.0.1', resolve));
  const port = (server.server.address() as AddressInfo).port;
  return Object.assign(peer, {
    port,
    url: `${opts.secure ? 'smtps' : 'smtp'}://127.0.0.1:${port}`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  });
}
