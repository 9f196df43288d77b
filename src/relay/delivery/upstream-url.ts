/**
 * `upstream.url` → where and how to connect. Three schemes, as in DESIGN.md:
 * - `smtp://`          STARTTLS when the server offers it (Postfix `smtp_tls_security_level = may`)
 * - `smtp+starttls://` STARTTLS required; a server that does not offer it is a (deferring) error
 * - `smtps://`         implicit TLS from the first byte (RFC 8314 submissions port)
 */

export type TlsMode = 'opportunistic' | 'required' | 'implicit';

export interface UpstreamTarget {
  host: string;
  port: number;
  tls: TlsMode;
}

const SCHEMES: Record<string, { tls: TlsMode; port: number }> = {
  // 25 is the relay (MTA-to-MTA) port; 587 and 465 are where a smarthost that wants STARTTLS or
  // implicit TLS usually listens (smtp-relay.gmail.com answers on all three).
  smtp: { tls: 'opportunistic', port: 25 },
  'smtp+starttls': { tls: 'required', port: 587 },
  smtps: { tls: 'implicit', port: 465 },
};

const URL_RE = /^([a-z+]+):\/\/(\[[0-9a-f:.]+\]|[^/\s:[\]]+)(?::(\d{1,5}))?\/?$/i;

export function parseUpstreamUrl(url: string): UpstreamTarget {
  const m = URL_RE.exec(url.trim());
  const scheme = SCHEMES[(m?.[1] ?? '').toLowerCase()];
  if (!m || !scheme) {
    throw new Error(
      `invalid upstream URL ${JSON.stringify(url)}: expected smtp://, smtp+starttls:// or smtps://HOST[:PORT]`,
    );
  }
  const port = m[3] === undefined ? scheme.port : Number(m[3]);
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new Error(`invalid upstream URL ${JSON.stringify(url)}: port out of range`);
  }
  // Brackets only delimit an IPv6 literal in the URL; sockets want the bare address.
  const host = (m[2] ?? '').replace(/^\[(.*)\]$/, '$1');
  return { host, port, tls: scheme.tls };
}

/** For logs and Remote-MTA: `host:port`. */
export function describeTarget(t: UpstreamTarget): string {
  const host = t.host.includes(':') ? `[${t.host}]` : t.host;
  const tls = {
    opportunistic: 'STARTTLS if offered',
    required: 'STARTTLS required',
    implicit: 'implicit TLS',
  }[t.tls];
  return `${host}:${t.port} (${tls})`;
}
