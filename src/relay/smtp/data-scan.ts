import { SMTPStream } from 'smtp-server/lib/smtp-stream.js';

/**
 * smtp-server's DATA parser (`SMTPStream._feedDataStream`) with one change: it finds the next
 * line-leading dot with `Buffer.indexOf('\n.')` where smtp-server tests every byte in a
 * JavaScript loop (17 % of the relay's busy time at 5 MB messages, bench/README.md). Everything
 * else, including the end-of-data and smuggling rules, is smtp-server 3.21's code as it is; a unit
 * test (test/unit/smtp/data-scan.test.ts) feeds both the same fuzzed, randomly chunked DATA and
 * compares what comes out. smtp-server-adapter.ts installs it over the prototype at start; the
private fields it uses are listed, with their meaning, in that module's contract.
 */

const LF_DOT = Buffer.from('\n.');
const CR = 0x0d;
const LF = 0x0a;
const DOT = 0x2e;

type Done = (err?: Error | null) => void;

export function feedDataStream(this: SMTPStream, input: Buffer, done: Done): void {
  const dataStream = this._dataStream;
  // only called in data mode, which always has a stream (smtp-server's own code relies on it too)
  if (!dataStream) throw new Error('SMTPStream._feedDataStream outside data mode');
  let chunk = input;
  const last = this._lastBytes || undefined;
  if (last?.length) {
    chunk = Buffer.concat([last, chunk], last.length + chunk.length);
    this._lastBytes = false;
  }
  let len = chunk.length;
  // A lone "." as the very first line ends the data; only while nothing was consumed yet.
  if (this._atDataStart && len >= 3 && chunk[0] === DOT && chunk[1] === CR && chunk[2] === LF) {
    this._endDataMode(false, chunk.subarray(3), done);
    return;
  }
  if (this._atDataStart && len >= 2 && chunk[0] === DOT && chunk[1] === DOT) {
    chunk = chunk.subarray(1);
    len--;
    this._atDataStart = false;
  }
  // A dot at i (2 <= i < len - 2) right after a LF: the terminator, or an escape dot.
  for (let nl = chunk.indexOf(LF_DOT, 1); nl !== -1 && nl + 1 < len - 2; nl = chunk.indexOf(LF_DOT, nl + 1)) {
    const i = nl + 1;
    if (chunk[i - 2] === CR && chunk[i + 1] === CR && chunk[i + 2] === LF) {
      // everything before the terminator is content, including the CRLF ending the last line
      const buf = chunk.subarray(0, i);
      this._countDataBytes(buf.length);
      this._endDataMode(buf, chunk.subarray(i + 3), done);
      return;
    }
    if (chunk[i + 1] === DOT) {
      const buf = chunk.subarray(0, i);
      this._lastBytes = false;
      this._countDataBytes(buf.length);
      if (dataStream.writable) dataStream.write(buf);
      const rest = chunk.subarray(i + 1);
      setImmediate(() => this._feedDataStream(rest, done));
      return;
    }
  }
  // keep the last bytes: the terminator may straddle this chunk and the next
  this._lastBytes = chunk.length < 4 ? chunk : chunk.subarray(chunk.length - 4);
  if (this._lastBytes.length >= chunk.length) {
    done();
    return;
  }
  const buf = chunk.subarray(0, chunk.length - this._lastBytes.length);
  this._countDataBytes(buf.length);
  if (!dataStream.writable || dataStream.write(buf) || dataStream.destroyed) {
    done();
    return;
  }
  // a stream the application destroys never drains, it only closes
  const onDrain = () => {
    dataStream.removeListener('drain', onDrain);
    dataStream.removeListener('close', onDrain);
    done();
  };
  dataStream.once('drain', onDrain);
  dataStream.once('close', onDrain);
}

/** smtp-server's SMTPStream class (for the test that compares both scans). */
export async function loadSmtpStream(): Promise<typeof SMTPStream> {
  return SMTPStream;
}
