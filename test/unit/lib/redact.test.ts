import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../../src/config/load.ts';
import { createLogger } from '../../../src/lib/logger.ts';
import { addressRedactor, redactValue } from '../../../src/lib/redact.ts';
import { emailRelaySpecSchema } from '../../../src/operator/api/emailrelay.ts';
import { renderRelayConfig } from '../../../src/operator/emailrelay/config.ts';

/** Log lines as parsed JSON objects, from a logger writing into memory. */
function capture(mode: 'plain' | 'mask' | 'hash', hashKey = 'k') {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk, _enc, cb) {
      for (const l of String(chunk).split('\n')) if (l) lines.push(JSON.parse(l));
      cb();
    },
  });
  return { logger: createLogger('info', { addresses: mode, hashKey }, sink), lines };
}

const entry = {
  queueId: 'Q1',
  from: 'John.Doe@example.com',
  to: ['alice@example.org', 'bob@[192.0.2.1]'],
  reply: '550 5.1.1 <alice@example.org>: Recipient address rejected',
  size: 1234,
  nested: { recipients: [{ address: 'carol@example.net' }] },
};

describe('address redaction in logs', () => {
  it('mask keeps the first character and the domain', () => {
    const r = addressRedactor('mask');
    expect(r('John.Doe@example.com')).toBe('J***@example.com');
    expect(r('550 5.1.1 <alice@example.org>: rejected')).toBe('550 5.1.1 <a***@example.org>: rejected');
    expect(r('bob@[192.0.2.1]')).toBe('b***@[192.0.2.1]');
    expect(r('no address here')).toBe('no address here');
  });

  it('hash is stable per address (case-insensitive), keyed, and keeps the domain', () => {
    const r = addressRedactor('hash', 'key-1');
    const a = r('alice@example.org');
    expect(a).toMatch(/^h-[0-9a-f]{12}@example\.org$/);
    expect(r('Alice@Example.org').replace(/@.*/, '')).toBe(a.replace(/@.*/, ''));
    expect(r('bob@example.org').slice(0, 14)).not.toBe(a.slice(0, 14));
    expect(addressRedactor('hash', 'key-2')('alice@example.org')).not.toBe(a);
  });

  it('plain changes nothing', () => {
    expect(addressRedactor('plain')('alice@example.org')).toBe('alice@example.org');
  });

  it('redacts deep values and leaves non-strings and Errors alone', () => {
    const err = new Error('x');
    const out = redactValue({ ...entry, err }, addressRedactor('mask')) as typeof entry & { err: Error };
    expect(out.nested.recipients[0]!.address).toBe('c***@example.net');
    expect(out.size).toBe(1234);
    expect(out.err).toBe(err);
    expect(entry.from).toBe('John.Doe@example.com'); // the caller's object is not modified
  });

  it('the logger writes the same JSON field names, with redacted values and message', () => {
    const plain = capture('plain');
    const masked = capture('mask');
    for (const { logger } of [plain, masked]) logger.info(entry, 'refused: 550 5.7.1 <bob@example.org>');
    const [p] = plain.lines;
    const [m] = masked.lines;
    expect(Object.keys(m!)).toEqual(Object.keys(p!));
    expect(p!['from']).toBe('John.Doe@example.com');
    expect(m!['from']).toBe('J***@example.com');
    expect(m!['to']).toEqual(['a***@example.org', 'b***@[192.0.2.1]']);
    expect(m!['reply']).toBe('550 5.1.1 <a***@example.org>: Recipient address rejected');
    expect(m!['msg']).toBe('refused: 550 5.7.1 <b***@example.org>');
    expect(JSON.stringify(m)).not.toMatch(/alice|bob@|John|carol/);
  });

  it('is a config field (default plain), and an EmailRelay field the operator renders only when set', () => {
    expect(parseConfig({}).logAddresses).toBe('plain');
    expect(parseConfig({ logAddresses: 'hash' }).logAddresses).toBe('hash');
    expect(() => parseConfig({ logAddresses: 'scramble' })).toThrow(/logAddresses/);
    const spec = (extra: object) =>
      emailRelaySpecSchema.parse({
        hostname: 'mail.example.com',
        upstream: { host: 'smtp.example.com' },
        ...extra,
      });
    expect(renderRelayConfig(spec({ logAddresses: 'mask' })).logAddresses).toBe('mask');
    expect(renderRelayConfig(spec({})).logAddresses).toBe('plain');
  });
});
