/**
 * smtp-server as the relay drives it (smtp-server-adapter.ts: our connection class, no 100 ms
 * greeting delay, the fast DATA scan) and nothing else: each message appended to a file and
 * fdatasynced before its 250, as bench/bare-smtp.ts does. No journal records, policy, message
 * filter, delivery, logs or metrics. Between bare-smtp.ts and this sits what the SMTP library
 * costs; between this and the relay, what the relay's own code costs (bench/ceiling.ts).
 *
 *   node --import tsx bench/bare-smtp-server.ts PORT
 */
import { fdatasyncSync, openSync, unlinkSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createFrontServer } from '../src/relay/smtp/smtp-server-adapter.ts';

const port = Number(process.argv[2]);
const journal = join(tmpdir(), `bare-smtp-server-${process.pid}.journal`);
const fd = openSync(journal, 'w');
process.on('exit', () => unlinkSync(journal));
process.on('SIGTERM', () => process.exit(0));

const server = createFrontServer<object>(
  {
    name: 'bare.bench.example.com',
    banner: '',
    disabledCommands: ['AUTH', 'STARTTLS'],
    hideSTARTTLS: true,
    hideENHANCEDSTATUSCODES: false,
    hideDSN: false,
    size: 10 * 1024 * 1024,
    authOptional: true,
    disableReverseLookup: true,
    logger: false,
  },
  {
    newState: () => ({}),
    reply: () => undefined,
    greet: (_conn, ready) => ready(),
    etrn: () => undefined,
    command: () => undefined,
    opened: () => undefined,
    closed: () => undefined,
    onConnect: (_conn, cb) => cb(),
    onAuth: (_auth, _conn, cb) => cb(new Error('no AUTH')),
    onMailFrom: (_address, _conn, cb) => cb(),
    onRcptTo: (_address, _conn, cb) => cb(),
    onData: (stream, _conn, cb) => {
      const parts: Buffer[] = [];
      stream.on('data', (b: Buffer) => parts.push(b));
      stream.on('end', () => {
        writeSync(fd, Buffer.concat(parts));
        fdatasyncSync(fd);
        cb(null, 'Ok: queued');
      });
    },
    onClose: () => undefined,
  },
);
server.listen(port, '127.0.0.1', () => console.log(`bare smtp-server on ${port}`));
