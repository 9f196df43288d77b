import { describe, expect, it } from 'vitest';
import { verdictOfReply } from '../../../src/relay/delivery/reply.ts';
import { classify, compileReplyClasses, replyText } from '../../../src/relay/delivery/reply-classes.ts';

const google = compileReplyClasses(
  { profile: 'auto', rules: [] },
  'smtp+starttls://smtp-relay.gmail.com:587',
);
const generic = compileReplyClasses({ profile: 'auto', rules: [] }, 'smtp://mx.example.com');
const of = (reply: string, rules = google, command = 'RCPT TO') =>
  classify(verdictOfReply(reply, command), rules);

describe('reply classes', () => {
  it("reads Google's relay-wide refusals as the relay's, not the recipient's", () => {
    expect(
      of('550-5.7.0 Mail relay denied [203.0.113.7]. Invalid credentials for 550 5.7.0 relay ... - gsmtp'),
    ).toEqual({ level: 'relay', reason: 'identity' });
    expect(of('550 5.7.1 Invalid credentials for relay [203.0.113.7]. - gsmtp')).toEqual({
      level: 'relay',
      reason: 'identity',
    });
    expect(of('550 5.4.5 Daily SMTP relay limit exceeded for user. - gsmtp', google, 'MAIL FROM')).toEqual({
      level: 'relay',
      reason: 'quota',
    });
    expect(of('550 5.7.1 Daily SMTP relay limit exceeded for customer. - gsmtp')).toEqual({
      level: 'relay',
      reason: 'quota',
    });
    expect(of('450 4.2.1 Peak SMTP relay limit exceeded for customer. - gsmtp', google, 'MAIL FROM')).toEqual(
      { level: 'relay', reason: 'rate' },
    );
    expect(
      of('421-4.7.0 Try again later, closing connection. (EHLO) 421 4.7.0 For more - gsmtp', google, 'EHLO'),
    ).toEqual({ level: 'relay', reason: 'config' });
    expect(
      of('535-5.7.8 Username and Password not accepted. 535 5.7.8 - gsmtp', google, 'AUTH PLAIN'),
    ).toEqual({ level: 'relay', reason: 'auth' });
  });

  it("keeps recipient refusals per recipient, and network failures the connection's", () => {
    expect(of('550 5.1.1 <x@example.net>: Recipient address rejected: User unknown')).toEqual({
      level: 'recipient',
    });
    expect(of('452 4.5.3 Your message has too many recipients. - gsmtp')).toEqual({ level: 'recipient' });
    expect(
      of(
        '550 5.7.1 [1.2.3.4] Messages missing a valid address in From: header - gsmtp',
        google,
        'end of DATA',
      ),
    ).toEqual({ level: 'recipient' });
    expect(
      classify(
        {
          outcome: 'deferred',
          reply: 'connect ECONNREFUSED',
          status: '4.4.1',
          remote: false,
          class: 'network',
        },
        google,
      ),
    ).toEqual({ level: 'connection' });
  });

  it("the generic table: Postfix-style relay refusals and AUTH failures, not Google's texts", () => {
    expect(of('554 5.7.1 <x@example.net>: Relay access denied', generic)).toEqual({
      level: 'relay',
      reason: 'identity',
    });
    expect(of('535 5.7.8 Error: authentication failed', generic, 'AUTH PLAIN')).toEqual({
      level: 'relay',
      reason: 'auth',
    });
    expect(of('450 4.2.1 Peak SMTP relay limit exceeded for customer', generic)).toEqual({
      level: 'recipient',
    });
  });

  it("a route's own rules come first", () => {
    const rules = compileReplyClasses(
      { profile: 'google', rules: [{ reply: 'Mail relay denied', class: 'recipient' }] },
      'smtp://127.0.0.1:2525',
    );
    expect(of('550 5.7.0 Mail relay denied [1.2.3.4]', rules)).toEqual({ level: 'recipient' });
  });

  it('quotes a multi-line reply as one sentence', () => {
    expect(
      replyText(
        '550-5.7.0 Mail relay denied [1.2.3.4]. Invalid 550-5.7.0 relay for example.com 550 5.7.0 https://x - gsmtp',
      ),
    ).toBe('550 5.7.0 Mail relay denied [1.2.3.4]. Invalid relay for example.com https://x - gsmtp');
    expect(replyText('250 2.0.0 Ok')).toBe('250 2.0.0 Ok');
    expect(replyText('connect ECONNREFUSED 127.0.0.1:25')).toBe('connect ECONNREFUSED 127.0.0.1:25');
  });
});
