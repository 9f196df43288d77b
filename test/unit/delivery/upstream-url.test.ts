import { describe, expect, it } from 'vitest';
import { describeTarget, parseUpstreamUrl } from '../../../src/relay/delivery/upstream-url.ts';

describe('parseUpstreamUrl', () => {
  it.each([
    ['smtp://relay.example.com', { host: 'relay.example.com', port: 25, tls: 'opportunistic' }],
    ['smtp://relay.example.com:2525', { host: 'relay.example.com', port: 2525, tls: 'opportunistic' }],
    ['smtp+starttls://smtp-relay.gmail.com', { host: 'smtp-relay.gmail.com', port: 587, tls: 'required' }],
    [
      'smtp+starttls://smtp-relay.gmail.com:587/',
      { host: 'smtp-relay.gmail.com', port: 587, tls: 'required' },
    ],
    ['smtps://smtp-relay.gmail.com', { host: 'smtp-relay.gmail.com', port: 465, tls: 'implicit' }],
    ['SMTPS://127.0.0.1:1465', { host: '127.0.0.1', port: 1465, tls: 'implicit' }],
    ['smtp://[::1]:25', { host: '::1', port: 25, tls: 'opportunistic' }],
  ])('%s', (url, expected) => {
    expect(parseUpstreamUrl(url)).toEqual(expected);
  });

  it.each([
    'http://relay.example.com',
    'smtp://',
    'smtp://relay.example.com:0',
    'smtp://relay.example.com:70000',
    'smtp://user:pass@relay.example.com',
    'relay.example.com:25',
    'smtp://relay.example.com/path',
  ])('rejects %s', (url) => {
    expect(() => parseUpstreamUrl(url)).toThrow(/invalid upstream URL/);
  });

  it('describes the target for logs', () => {
    expect(describeTarget(parseUpstreamUrl('smtp+starttls://smtp-relay.gmail.com'))).toBe(
      'smtp-relay.gmail.com:587 (STARTTLS required)',
    );
    expect(describeTarget(parseUpstreamUrl('smtp://[::1]'))).toBe('[::1]:25 (STARTTLS if offered)');
  });
});
