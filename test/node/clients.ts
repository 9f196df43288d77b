// Client programs run in pods of the client image (node + nodemailer, python3). Service and
// NetworkPolicy programming is asynchronous (Ready is not reachable), so the one-shot clients retry
// connection-level errors for a bounded time; an SMTP reply is never retried.

/**
 * The seed's Python smtplib "Basic usage", unchanged but for the sender (the sample EmailPolicy
 * allows only its company domain) and a Subject. set_debuglevel(1) makes smtplib print the server's
 * replies, so the test sees the `250 ... queued` the snippet itself discards.
 */
export function pythonSnippet(host: string, subject: string): string[] {
  const script = `
import smtplib, socket, sys, time
deadline = time.time() + 60
while True:
    try:
        server = smtplib.SMTP('${host}', 25)
        break
    except (OSError, socket.gaierror) as e:
        if time.time() > deadline:
            print('connect failed: %r' % (e,))
            sys.exit(1)
        time.sleep(1)
server.set_debuglevel(1)
server.sendmail('from@bionicaisolutions.com', 'to@example.com', 'Subject: ${subject}\\n\\nmessage')
server.quit()
`;
  return ['/usr/bin/python3', '-c', script];
}

/** The seed's Nodemailer snippet (createTransporter is a typo for createTransport in the seed). */
export function nodemailerSnippet(host: string, subject: string): string[] {
  const script = `
const nodemailer = require('nodemailer');
const transporter = nodemailer.createTransport({ host: '${host}', port: 25, secure: false, auth: {} });
const mailOptions = { from: 'from@bionicaisolutions.com', to: 'to@example.com', subject: '${subject}', text: 'This is a test email' };
const deadline = Date.now() + 60000;
function send() {
  transporter.sendMail(mailOptions, (error, info) => {
    if (error && error.code !== 'EENVELOPE' && !error.responseCode && Date.now() < deadline) return setTimeout(send, 1000);
    if (error) { console.log(error.responseCode ? error.response : String(error)); process.exit(1); }
    console.log('Email sent: ' + info.response);
  });
}
send();
`;
  return ['/nodejs/bin/node', '-e', script];
}

/**
 * One message per connection for `seconds`, as fast as the relay answers (then `pauseMs`). First it
 * waits to be admitted: an SMTP greeting on `host` (retried for up to 60 s, as a pod just started
 * is refused until the NetworkPolicy knows its IP), then prints {"started": true, t}. From then on
 * nothing is retried: a JSON line per message, {"id", "ok": true, "response"} or {"id", "t",
 * "error", "detail"}, then {"done": true, acked, errors}. Every id carries the pod name, so a test
 * can match acknowledgements to deliveries.
 */
export function loadClient(host: string, seconds: number, pauseMs = 0): string[] {
  const script = `
const net = require('net');
const nodemailer = require('nodemailer');
const pod = process.env.POD_NAME || require('os').hostname();
const greeted = () => new Promise((resolve) => {
  const s = net.connect(25, '${host}');
  let buf = '';
  const done = (ok) => { s.destroy(); resolve(ok); };
  s.setTimeout(5000, () => done(false));
  s.on('error', () => done(false));
  s.on('data', (d) => {
    buf += d;
    if (!/^220 /m.test(buf) || s.writableEnded) return;
    s.end('QUIT\\r\\n');
    s.once('close', () => resolve(true));
  });
});
let seq = 0, acked = 0, errors = 0;
(async () => {
  const admitBy = Date.now() + 60000;
  let probes = 0;
  for (;;) {
    probes++;
    if (await greeted()) break;
    if (Date.now() > admitBy) { console.log(JSON.stringify({ admitted: false, probes })); process.exit(1); }
    await new Promise((r) => setTimeout(r, 250));
  }
  console.log(JSON.stringify({ started: true, t: Date.now(), probes }));
  const until = Date.now() + ${seconds * 1000};
  while (Date.now() < until) {
    const id = pod + '-' + (++seq);
    const t = nodemailer.createTransport({ host: '${host}', port: 25, secure: false, connectionTimeout: 5000, greetingTimeout: 5000, socketTimeout: 15000 });
    try {
      const info = await t.sendMail({ from: 'load@bionicaisolutions.com', to: 'sink@example.com', subject: 'load ' + id, text: 'message ' + id });
      acked++;
      console.log(JSON.stringify({ id, ok: true, response: info.response }));
    } catch (e) {
      errors++;
      console.log(JSON.stringify({ id, t: Date.now(), error: String(e && (e.response || e.code || e.message)), detail: String(e && e.message) }));
      await new Promise((r) => setTimeout(r, 200));
    }
    t.close();
    if (${pauseMs} > 0) await new Promise((r) => setTimeout(r, ${pauseMs}));
  }
  console.log(JSON.stringify({ done: true, acked, errors }));
})();
`;
  return ['/nodejs/bin/node', '-e', script];
}

export interface LoadResult {
  acked: string[];
  /** `t`: when the client saw it (ms epoch); `detail`: the error's message (e.g. connect ECONNREFUSED ...). */
  errors: { id: string; error: string; t?: number; detail?: string }[];
}

/** "n x reason" per distinct client error, most frequent first. */
export function errorSummary(errors: LoadResult['errors']): string {
  const counts = new Map<string, number>();
  for (const e of errors) counts.set(e.error, (counts.get(e.error) ?? 0) + 1);
  return (
    [...counts]
      .sort((a, b) => b[1] - a[1])
      .map(([why, n]) => `${n} x ${why}`)
      .join('; ') || 'none'
  );
}

/** Parses loadClient output (several pods' logs concatenated). */
export function parseLoad(logs: string): LoadResult {
  const out: LoadResult = { acked: [], errors: [] };
  for (const line of logs.split('\n')) {
    if (!line.startsWith('{')) continue;
    const r = JSON.parse(line) as {
      started?: boolean;
      id?: string;
      ok?: boolean;
      error?: string;
      detail?: string;
      t?: number;
      done?: boolean;
    };
    if (r.done || r.started || !r.id) continue;
    if (r.ok) out.acked.push(r.id);
    else
      out.errors.push({
        id: r.id,
        error: r.error ?? '',
        ...(r.t ? { t: r.t } : {}),
        ...(r.detail ? { detail: r.detail } : {}),
      });
  }
  return out;
}
