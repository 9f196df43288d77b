/**
 * The probe `test-send` runs in a one-off pod: one message through the relay's Service with the
 * nodemailer of the relay image, as an app would send it; it prints the relay's reply as JSON.
 */
export function probeScript(
  p: { endpoint: string; from: string; to: string },
  nodemailerPath = '/app/node_modules/nodemailer',
): string {
  const i = p.endpoint.lastIndexOf(':');
  const host = i > 0 ? p.endpoint.slice(0, i) : p.endpoint;
  const port = i > 0 ? Number(p.endpoint.slice(i + 1)) : 25;
  const args = JSON.stringify({ host, port, from: p.from, to: p.to });
  return [
    `const a = ${args};`,
    `const nodemailer = require(${JSON.stringify(nodemailerPath)});`,
    'const t = nodemailer.createTransport({ host: a.host, port: a.port, secure: false, name: "email-relay-probe.local" });',
    't.sendMail({ from: a.from, to: a.to, subject: "email-relay test-send", text: "Probe sent by kubectl email-relay test-send at " + new Date().toISOString() + ".\\n" })',
    '  .then((r) => { console.log(r.response); process.exit(0); },',
    '        (e) => { console.log(e.response || e.message); process.exit(1); });',
  ].join('\n');
}

/** "250 2.0.0 Ok: queued as 01HX..." -> the queue id. */
export function queueIdOf(reply: string): string | undefined {
  return /queued as (\S+)/.exec(reply)?.[1];
}
