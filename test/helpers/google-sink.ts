import { randomBytes } from 'node:crypto';
import { type AddressInfo, createServer, type Socket } from 'node:net';
import { TLSSocket } from 'node:tls';

/**
 * A smarthost that answers like Google Workspace's SMTP relay (smtp-relay.gmail.com), on loopback:
 * a real SMTP server (greeting, EHLO, STARTTLS, AUTH PLAIN/LOGIN, MAIL, RCPT, DATA, RSET, NOOP,
 * QUIT, pipelining) with Google's refusals, switchable while it runs:
 *
 * - `relayDenied`: every RCPT gets "550 5.7.0 Mail relay denied [IP]. Invalid credentials for relay ..."
 * - `dailyLimit`: every MAIL gets "550 5.4.5 Daily SMTP relay limit exceeded for user"
 * - `peakLimit`: after `messages` accepted messages, MAIL gets "450 4.2.1 Peak SMTP relay limit
 *   exceeded for customer" for `penaltyMs`, then the count starts again (bursts)
 * - at most 100 recipients per transaction ("452 4.5.3 Your message has too many recipients")
 * - an EHLO name that is not a FQDN ("localhost", a pod name, an address literal) gets
 *   "421 4.7.0 Try again later, closing connection. (EHLO)" and the connection is closed
 * - a message without a From: header is refused with 550 5.7.1 (Gmail: not RFC 5322 compliant)
 * - `tarpitMs`: every reply is written one byte at a time, this many ms apart
 *
 * It counts connections and transactions (MAIL commands) with their times, so tests and the
 * benchmark can tell a relay that backs off from one that hammers.
 */

export interface GoogleSinkOptions {
  port?: number;
  /** Require AUTH with these credentials (IP mode when unset). */
  auth?: { user: string; pass: string };
  /** Offer STARTTLS with this PEM key pair. */
  tls?: { key: string; cert: string };
  /** Recipients per transaction (Google: 100). */
  maxRecipients?: number;
}

export interface GoogleSinkMessage {
  from: string;
  to: string[];
  data: string;
  at: number;
}

export interface GoogleSinkMode {
  relayDenied: boolean;
  dailyLimit: boolean;
  peakLimit?: { messages: number; penaltyMs: number };
  /** Delay between the bytes of every reply; 0: replies go out whole. */
  tarpitMs: number;
  /** Replies per connection sent whole before the tarpit starts (1: the greeting comes at once). */
  tarpitAfter: number;
  /** Refuse messages without From: (on, as Gmail does). */
  requireFrom: boolean;
  /** Answer every EHLO with the 421 (EHLO) refusal, whatever the name. */
  badEhlo?: boolean;
}

export interface GoogleSink {
  port: number;
  url: string;
  mode: GoogleSinkMode;
  messages: GoogleSinkMessage[];
  /** Times of every accepted TCP connection. */
  connections: number[];
  /** Times of every MAIL FROM (one per transaction attempted). */
  transactions: number[];
  /** Every refusal sent, with its time. */
  refusals: { at: number; reply: string }[];
  ehloNames: string[];
  close(): Promise<void>;
}

const id = () => randomBytes(6).toString('base64url');
const SUFFIX = () => `${id()} - gsmtp`;

/** Google's multi-line refusal texts, as `code-status text` lines joined for the wire. */
function reply(code: number, status: string, lines: string[]): string {
  return lines.map((l, i) => `${code}${i === lines.length - 1 ? ' ' : '-'}${status} ${l}`).join('\r\n');
}

export const GOOGLE_TEXT = {
  relayDenied: (ip: string, domain: string) =>
    reply(550, '5.7.0', [
      `Mail relay denied [${ip}]. Invalid credentials for relay for one of the domains in: ${domain}`,
      '(as obtained from HELO and MAIL FROM). Email is being sent from a domain or IP address',
      "which isn't registered in your Workspace account. Please login to your Workspace account and",
      'verify that your sending device IP address has been registered within the Workspace SMTP',
      `Relay Settings. https://support.google.com/a/answer/6140680#invalidcred ${SUFFIX()}`,
    ]),
  dailyLimit: () =>
    reply(550, '5.4.5', [
      'Daily SMTP relay limit exceeded for user. For more information on SMTP relay sending',
      `limits please contact your administrator or visit https://support.google.com/a/answer/166852 ${SUFFIX()}`,
    ]),
  peakLimit: () =>
    reply(450, '4.2.1', [
      'Peak SMTP relay limit exceeded for customer. This is a temporary rate limit. For more',
      `information on SMTP relay limits, please visit https://support.google.com/a/answer/6140680 ${SUFFIX()}`,
    ]),
  badEhlo: () =>
    reply(421, '4.7.0', [
      'Try again later, closing connection. (EHLO)',
      ` For more information, go to https://support.google.com/a/answer/3221692 ${SUFFIX()}`,
    ]),
  tooManyRecipients: () =>
    reply(452, '4.5.3', [
      "Your message has too many recipients. For more information regarding Google's sending",
      `limits, go to https://support.google.com/mail/?p=TooManyRecipientsError ${SUFFIX()}`,
    ]),
  noFrom: (ip: string) =>
    reply(550, '5.7.1', [
      `[${ip}] Messages missing a valid address in From: header, or having no From: header, are not`,
      `accepted. https://support.google.com/mail/?p=RfcMessageNonCompliant ${SUFFIX()}`,
    ]),
  badAuth: () =>
    reply(535, '5.7.8', [
      'Username and Password not accepted. For more information, go to',
      `https://support.google.com/mail/?p=BadCredentials ${SUFFIX()}`,
    ]),
};

/** Google wants a real name in EHLO: at least two labels, not localhost, not an address literal. */
function goodEhlo(name: string): boolean {
  return /^[a-z0-9-]+(\.[a-z0-9-]+)+$/i.test(name) && !/^[\d.]+$/.test(name) && !/^localhost\./i.test(name);
}

export async function startGoogleSink(opts: GoogleSinkOptions = {}): Promise<GoogleSink> {
  const maxRcpt = opts.maxRecipients ?? 100;
  const sockets = new Set<Socket>();
  const sink: Omit<GoogleSink, 'port' | 'url' | 'close'> = {
    mode: { relayDenied: false, dailyLimit: false, tarpitMs: 0, tarpitAfter: 0, requireFrom: true },
    messages: [],
    connections: [],
    transactions: [],
    refusals: [],
    ehloNames: [],
  };
  let accepted = 0; // towards the peak limit
  let penaltyUntil = 0;

  const server = createServer((raw) => {
    sockets.add(raw);
    raw.on('close', () => sockets.delete(raw));
    raw.on('error', () => {});
    sink.connections.push(Date.now());
    const ip = raw.remoteAddress?.replace(/^::ffff:/, '') ?? '127.0.0.1';
    let sock: Socket = raw;
    let buf = '';
    let ehlo = false;
    let authed = !opts.auth;
    let mail: string | undefined;
    let rcpts: string[] = [];
    let data: string[] | undefined;
    let authLogin: { step: 'user' | 'pass'; user?: string } | undefined;
    // Replies go out in order even when tarpitted; `writing` chains them.
    let writing = Promise.resolve();
    let replies = 0;

    const send = (text: string, close = false) => {
      if (/^[45]/.test(text)) sink.refusals.push({ at: Date.now(), reply: text.replace(/\r\n/g, ' ') });
      const bytes = Buffer.from(`${text}\r\n`);
      const whole = replies++ < sink.mode.tarpitAfter;
      writing = writing.then(async () => {
        if (sock.destroyed) return;
        if (!sink.mode.tarpitMs || whole) sock.write(bytes);
        else
          for (const b of bytes) {
            if (sock.destroyed) return;
            sock.write(Buffer.from([b]));
            await new Promise((r) => setTimeout(r, sink.mode.tarpitMs));
          }
        if (close) sock.end();
      });
    };
    const reset = () => {
      mail = undefined;
      rcpts = [];
      data = undefined;
    };

    const onLine = (line: string) => {
      if (data) {
        if (line === '.') return endData();
        data.push(line.startsWith('.') ? line.slice(1) : line);
        return;
      }
      if (authLogin) {
        const v = Buffer.from(line, 'base64').toString();
        if (authLogin.step === 'user') {
          authLogin = { step: 'pass', user: v };
          return send('334 UGFzc3dvcmQ6');
        }
        const ok = authLogin.user === opts.auth?.user && v === opts.auth?.pass;
        authLogin = undefined;
        authed = ok;
        return send(ok ? '235 2.7.0 Accepted' : GOOGLE_TEXT.badAuth());
      }
      const [verb = '', ...rest] = line.split(' ');
      const arg = rest.join(' ');
      switch (verb.toUpperCase()) {
        case 'EHLO':
        case 'HELO': {
          sink.ehloNames.push(arg);
          if (!goodEhlo(arg) || sink.mode.badEhlo) return send(GOOGLE_TEXT.badEhlo(), true);
          ehlo = true;
          reset();
          const ext = [
            `smtp-relay.gmail.com at your service, [${ip}]`,
            'SIZE 157286400',
            '8BITMIME',
            ...(opts.tls && !(sock instanceof TLSSocket) ? ['STARTTLS'] : []),
            ...(opts.auth ? ['AUTH LOGIN PLAIN'] : []),
            'ENHANCEDSTATUSCODES',
            'PIPELINING',
            'SMTPUTF8',
          ];
          return send(ext.map((e, i) => `250${i === ext.length - 1 ? ' ' : '-'}${e}`).join('\r\n'));
        }
        case 'STARTTLS': {
          if (!opts.tls) return send('502 5.5.1 Unrecognized command.');
          send('220 2.0.0 Ready to start TLS');
          writing = writing.then(() => {
            raw.removeAllListeners('data');
            const tls = new TLSSocket(raw, { isServer: true, key: opts.tls!.key, cert: opts.tls!.cert });
            tls.on('error', () => {});
            tls.on('data', onData);
            sock = tls;
            ehlo = false;
          });
          return;
        }
        case 'AUTH': {
          if (!opts.auth) return send('502 5.5.1 Unrecognized command.');
          const [mech = '', initial] = arg.split(' ');
          if (mech.toUpperCase() === 'PLAIN') {
            const [, user, pass] = Buffer.from(initial ?? '', 'base64')
              .toString()
              .split('\0');
            authed = user === opts.auth.user && pass === opts.auth.pass;
            return send(authed ? '235 2.7.0 Accepted' : GOOGLE_TEXT.badAuth());
          }
          if (mech.toUpperCase() === 'LOGIN') {
            authLogin = { step: 'user' };
            return send('334 VXNlcm5hbWU6');
          }
          return send('504 5.7.4 Unrecognized authentication type.');
        }
        case 'MAIL': {
          if (!ehlo) return send('503 5.5.1 EHLO/HELO first.');
          if (!authed) return send(`530 5.7.0 Authentication Required. ${SUFFIX()}`);
          sink.transactions.push(Date.now());
          const from = /^FROM:\s*<([^>]*)>/i.exec(arg)?.[1];
          if (from === undefined) return send('555 5.5.2 Syntax error.');
          if (sink.mode.dailyLimit) return send(GOOGLE_TEXT.dailyLimit());
          const peak = sink.mode.peakLimit;
          if (peak && Date.now() < penaltyUntil) return send(GOOGLE_TEXT.peakLimit());
          if (peak && accepted >= peak.messages) {
            accepted = 0;
            penaltyUntil = Date.now() + peak.penaltyMs;
            return send(GOOGLE_TEXT.peakLimit());
          }
          mail = from;
          return send(`250 2.1.0 OK ${SUFFIX()}`);
        }
        case 'RCPT': {
          if (mail === undefined) return send('503 5.5.1 MAIL first.');
          const to = /^TO:\s*<([^>]*)>/i.exec(arg)?.[1];
          if (!to) return send('555 5.5.2 Syntax error.');
          if (rcpts.length >= maxRcpt) return send(GOOGLE_TEXT.tooManyRecipients());
          if (sink.mode.relayDenied) {
            const domain = mail.slice(mail.lastIndexOf('@') + 1) || 'unknown';
            return send(GOOGLE_TEXT.relayDenied(ip, domain));
          }
          rcpts.push(to);
          return send(`250 2.1.5 OK ${SUFFIX()}`);
        }
        case 'DATA':
          if (mail === undefined || !rcpts.length) return send('503 5.5.1 RCPT first.');
          data = [];
          return send(`354 Go ahead ${SUFFIX()}`);
        case 'RSET':
          reset();
          return send(`250 2.1.5 Flushed ${SUFFIX()}`);
        case 'NOOP':
          return send(`250 2.0.0 OK ${SUFFIX()}`);
        case 'QUIT':
          return send(`221 2.0.0 closing connection ${SUFFIX()}`, true);
        default:
          return send(`502 5.5.1 Unrecognized command. ${SUFFIX()}`);
      }
    };

    const endData = () => {
      const lines = data ?? [];
      const text = lines.join('\r\n');
      const headerEnd = lines.indexOf('');
      const header = (headerEnd === -1 ? lines : lines.slice(0, headerEnd)).join('\r\n');
      const from = mail ?? '';
      const to = rcpts;
      reset();
      if (sink.mode.requireFrom && !/(^|\r\n)From:/i.test(header)) return send(GOOGLE_TEXT.noFrom(ip));
      sink.messages.push({ from, to, data: text, at: Date.now() });
      accepted++;
      return send(`250 2.0.0 OK ${Math.floor(Date.now() / 1000)} ${SUFFIX()}`);
    };

    const onData = (chunk: Buffer) => {
      buf += chunk.toString('latin1');
      for (;;) {
        const eol = buf.indexOf('\r\n');
        if (eol === -1) break;
        const line = buf.slice(0, eol);
        buf = buf.slice(eol + 2);
        onLine(line);
      }
    };
    raw.on('data', onData);
    send(`220 smtp-relay.gmail.com ESMTP ${SUFFIX()}`);
  });

  await new Promise<void>((resolve) => server.listen(opts.port ?? 0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    ...sink,
    port,
    url: `smtp://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
