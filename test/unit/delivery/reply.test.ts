import { describe, expect, it } from 'vitest';
import { statusOf, verdictOfError, verdictOfReply } from '../../../src/relay/delivery/reply.ts';

describe('verdictOfReply', () => {
  it.each([
    ['250 2.0.0 OK 1700000000 x', 'sent', '2.0.0', '2xx'],
    ['451 4.3.0 Try again later', 'deferred', '4.3.0', '4xx'],
    ['452 4.5.3 Too many recipients', 'deferred', '4.5.3', '4xx'],
    ['421 4.7.0 Try again later, closing connection', 'deferred', '4.7.0', '4xx'],
    ['550 5.1.1 The email account that you tried to reach does not exist', 'bounced', '5.1.1', '5xx'],
    ['550 Mailbox unavailable', 'bounced', '5.0.0', '5xx'],
    ['450 busy', 'deferred', '4.0.0', '4xx'],
    ['503 5.5.1 Bad sequence of commands', 'deferred', '5.5.1', '5xx'],
  ])('%s → %s', (reply, outcome, status, cls) => {
    const v = verdictOfReply(reply, 'RCPT TO');
    expect(v).toMatchObject({ outcome, status, class: cls, remote: true, command: 'RCPT TO' });
  });

  it('joins multi-line replies on one line', () => {
    const v = verdictOfReply(
      '550-5.7.0 Mail relay denied\n550 5.7.0 [1.2.3.4] see https://support.google.com',
    );
    expect(v.reply).toBe('550-5.7.0 Mail relay denied 550 5.7.0 [1.2.3.4] see https://support.google.com');
    expect(v.status).toBe('5.7.0');
  });

  it('ignores an enhanced code whose class contradicts the reply', () => {
    expect(statusOf('550 4.1.1 odd')).toBe('5.0.0');
  });
});

describe('verdictOfError', () => {
  it('defers connection failures with a local status', () => {
    expect(
      verdictOfError({ message: 'connect ECONNREFUSED 127.0.0.1:1', code: 'ESOCKET', command: 'CONN' }),
    ).toMatchObject({
      outcome: 'deferred',
      class: 'network',
      remote: false,
      status: '4.4.2',
    });
    expect(verdictOfError({ message: 'Greeting never received', code: 'ETIMEDOUT' }).status).toBe('4.4.2');
    expect(verdictOfError({ message: 'getaddrinfo ENOTFOUND', code: 'EDNS' }).status).toBe('4.4.3');
  });

  it('defers a 5xx during session setup or AUTH (Postfix soft-bounces those)', () => {
    const auth = verdictOfError({
      message: 'Invalid login',
      code: 'EAUTH',
      response: '535 5.7.8 Username and Password not accepted',
      responseCode: 535,
      command: 'AUTH PLAIN',
    });
    expect(auth).toMatchObject({ outcome: 'deferred', class: '5xx', status: '4.7.8', remote: true });
    const greet = verdictOfError({
      message: 'x',
      code: 'EPROTOCOL',
      response: '554 go away',
      command: 'CONN',
    });
    expect(greet.outcome).toBe('deferred');
  });

  it('bounces a 5xx to MAIL FROM or DATA, defers a 421 anywhere', () => {
    expect(
      verdictOfError({
        message: 'x',
        code: 'EENVELOPE',
        response: '550 5.7.0 Mail relay denied',
        command: 'MAIL FROM',
      }),
    ).toMatchObject({ outcome: 'bounced', status: '5.7.0', command: 'MAIL FROM' });
    expect(
      verdictOfError({ message: 'x', code: 'EMESSAGE', response: '554 5.6.0 bad', command: 'DATA' }).outcome,
    ).toBe('bounced');
    expect(
      verdictOfError({ message: 'x', code: 'ECONNECTION', response: '421 4.7.0 bye', command: 'DATA' })
        .outcome,
    ).toBe('deferred');
  });

  it('bounces a message larger than the upstream SIZE', () => {
    expect(
      verdictOfError({ message: 'Message size larger than allowed 1000', code: 'EMESSAGE' }),
    ).toMatchObject({
      outcome: 'bounced',
      status: '5.3.4',
    });
  });
});
