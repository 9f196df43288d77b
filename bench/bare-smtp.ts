/**
 * The least an SMTP server in Node.js can do per message, as a yardstick for the relay
 * (bench/ceiling.ts): one line parser on the socket's 'data' events, canned replies, the message
 * appended to a file and fdatasynced before its 250 (as the relay's journal does), and, given an
 * upstream port, the message written to that upstream over one pipelined connection after the
 * 250, on the same thread. No limits, no policy, no TLS, no queue: not a server to use.
 *
 *   node --import tsx bench/bare-smtp.ts PORT [UPSTREAM_PORT]
 */
import { fdatasyncSync, openSync, unlinkSync, writeSync } from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const port = Number(process.argv[2]);
const upstreamPort = Number(process.argv[3] ?? 0);
const journal = join(tmpdir(), `bare-smtp-${process.pid}.journal`);
const fd = openSync(journal, 'w');
process.on('exit', () => unlinkSync(journal));
process.on('SIGTERM', () => process.exit(0));

let upstream: Socket | undefined;
if (upstreamPort) {
  const up = connect(upstreamPort, '127.0.0.1');
  up.setNoDelay(true);
  up.on('data', () => undefined); // smtp-sink's replies: nothing to check in a yardstick
  await new Promise((r) => up.once('connect', r));
  up.write('EHLO bare.bench.example.com\r\n');
  upstream = up;
}

function handle(sock: Socket): void {
  sock.setNoDelay(true);
  let pending = '';
  let body: string[] | undefined; // set while in DATA
  sock.on('error', () => undefined);
  sock.write('220 bare.bench.example.com ESMTP\r\n');
  sock.on('data', (chunk: Buffer) => {
    pending += chunk.toString('latin1');
    for (;;) {
      if (body) {
        const end = pending.indexOf('\r\n.\r\n');
        if (end < 0) {
          body.push(pending);
          pending = '';
          return;
        }
        body.push(pending.slice(0, end + 2));
        pending = pending.slice(end + 5);
        const message = body.join('');
        body = undefined;
        writeSync(fd, message);
        fdatasyncSync(fd);
        sock.write('250 2.0.0 Ok: queued\r\n');
        if (upstream) {
          const up = upstream;
          setImmediate(() =>
            up.write(`MAIL FROM:<a@bench.example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n${message}.\r\n`),
          );
        }
        continue;
      }
      const nl = pending.indexOf('\r\n');
      if (nl < 0) return;
      const verb = pending.slice(0, 4).toUpperCase();
      pending = pending.slice(nl + 2);
      if (verb === 'EHLO') sock.write('250-bare.bench.example.com\r\n250-PIPELINING\r\n250 8BITMIME\r\n');
      else if (verb === 'DATA') {
        body = [];
        sock.write('354 End data with <CR><LF>.<CR><LF>\r\n');
      } else if (verb === 'QUIT') {
        sock.end('221 2.0.0 Bye\r\n');
        return;
      } else sock.write('250 2.1.0 Ok\r\n');
    }
  });
}

createServer(handle).listen(port, '127.0.0.1', () => console.log(`bare smtp on ${port}`));
