import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import nodemailer, { type TransportOptions } from 'nodemailer';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestRelay, type TestRelay } from '../../helpers/relay.ts';
import { waitForSinkMessage } from '../../helpers/sink-wait.ts';
import { type SmtpSink, startSmtpSink } from '../../helpers/smtp-sink.ts';

const run = promisify(execFile);

/**
 * The seed's client snippets, unchanged but for the host name, sent through the relay with its
 * default settings and delivered to Postfix's smtp-sink.
 */
describe('the seed client snippets through the relay to smtp-sink', () => {
  let sink: SmtpSink;
  let relay: TestRelay;
  let work: string;

  beforeAll(async () => {
    sink = await startSmtpSink();
    relay = await startTestRelay({ upstream: { url: `smtp://127.0.0.1:${sink.port}` } });
    work = await mkdtemp(join(tmpdir(), 'email-relay-snippets-'));
  });
  afterAll(async () => {
    await relay?.dispose();
    await sink?.dispose();
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('Python smtplib (the seed "Basic usage")', async () => {
    const script = `
import smtplib
server = smtplib.SMTP('127.0.0.1', ${relay.port})
server.sendmail('from@example.com', 'to@example.com', 'message python-basic-usage')
server.quit()
`;
    await run('python3', ['-c', script]);
    const msg = (await waitForSinkMessage(sink, (m) => m.includes('python-basic-usage'))).data;
    expect(msg).toMatch(/^Message-ID: </m);
    expect(msg).toMatch(/^Date: /m);
    // Gmail refuses a message without From:; the text is body, after the header section.
    expect(msg).toMatch(/^From: from@example\.com\r?$/m);
    expect(msg).toMatch(/\r?\n\r?\nmessage python-basic-usage/);
  });

  it('Python smtplib with the seed retry decorator (Subject via \\n line endings)', async () => {
    const script = `
import smtplib
server = smtplib.SMTP('127.0.0.1', ${relay.port})
try:
    server.sendmail('from@example.com', 'to@example.com', f'Subject: seed-retry\\n\\nbody of retry')
finally:
    server.quit()
`;
    await run('python3', ['-c', script]);
    const msg = (await waitForSinkMessage(sink, (m) => m.includes('seed-retry'))).data;
    expect(msg).toMatch(/^Subject: seed-retry$/m);
    expect(msg).toContain('body of retry');
    expect(msg).toMatch(/^From: from@example\.com\r?$/m);
  });

  it('Nodemailer (the seed transporter options, incl. the empty auth object)', async () => {
    const transporter = nodemailer.createTransport({
      host: '127.0.0.1',
      port: relay.port,
      secure: false,
      auth: {},
    } as TransportOptions);
    const info = await transporter.sendMail({
      from: 'from@example.com',
      to: 'to@example.com',
      subject: 'Test Email nodemailer-seed',
      text: 'This is a test email',
    });
    expect(info.response).toMatch(/^250 2\.0\.0 Ok: queued as /);
    await waitForSinkMessage(sink, (m) => m.includes('nodemailer-seed'));
    transporter.close();
  });

  it('Go net/smtp SendMail (the seed snippet)', async () => {
    const src = `package main

import (
	"fmt"
	"net/smtp"
	"os"
)

func main() {
	to, subject, body := "to@example.com", "go-seed-snippet", "hello from go"
	from := "from@example.com"
	msg := []byte(fmt.Sprintf("To: %s\\r\\nSubject: %s\\r\\n\\r\\n%s", to, subject, body))
	err := smtp.SendMail(os.Args[1], nil, from, []string{to}, msg)
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	fmt.Println("Email sent successfully")
}
`;
    const file = join(work, 'main.go');
    await writeFile(file, src);
    const { stdout } = await run('go', ['run', file, `127.0.0.1:${relay.port}`], {
      env: { ...process.env, GOFLAGS: '-mod=mod', GO111MODULE: 'off' },
      timeout: 120_000,
    });
    expect(stdout).toContain('Email sent successfully');
    await waitForSinkMessage(sink, (m) => m.includes('go-seed-snippet'));
  }, 180_000);

  it('swaks, the admin tool', async () => {
    const { stdout } = await run('swaks', [
      '--server',
      `127.0.0.1:${relay.port}`,
      '--from',
      'from@example.com',
      '--to',
      'to@example.com',
      '--header',
      'Subject: swaks-check',
      '--ehlo',
      'client.example.com',
    ]);
    expect(stdout).toMatch(/<- {2}250 2\.0\.0 Ok: queued as /);
    await waitForSinkMessage(sink, (m) => m.includes('swaks-check'));
  });
});
