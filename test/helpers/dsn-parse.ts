/**
 * Just enough MIME parsing to check RFC 3464 reports in tests: header fields (unfolded, names
 * lower-cased), multipart bodies, and the message/delivery-status field groups.
 */

export type Fields = Map<string, string>;

export function parseFields(block: string): Fields {
  const fields: Fields = new Map();
  const unfolded = block.replace(/\r?\n[ \t]+/g, ' ');
  for (const line of unfolded.split(/\r?\n/)) {
    const i = line.indexOf(':');
    if (i <= 0) continue;
    const name = line.slice(0, i).trim().toLowerCase();
    if (!fields.has(name)) fields.set(name, line.slice(i + 1).trim());
  }
  return fields;
}

export function splitMessage(raw: string): { headers: Fields; headerText: string; body: string } {
  const m = /\r?\n\r?\n/.exec(raw);
  const headerText = m ? raw.slice(0, m.index) : raw;
  const body = m ? raw.slice(m.index + m[0].length) : '';
  return { headers: parseFields(headerText), headerText, body };
}

export function param(value: string | undefined, name: string): string | undefined {
  const m = new RegExp(`${name}\\s*=\\s*(?:"([^"]*)"|([^;\\s]+))`, 'i').exec(value ?? '');
  return m ? (m[1] ?? m[2]) : undefined;
}

export interface Part {
  headers: Fields;
  body: string;
}

export function parseMultipart(raw: string): { headers: Fields; parts: Part[]; closed: boolean } {
  const { headers, body } = splitMessage(raw);
  const boundary = param(headers.get('content-type'), 'boundary');
  if (!boundary) throw new Error('not multipart: no boundary');
  const delim = `--${boundary}`;
  const chunks = body.split(new RegExp(`\\r?\\n?${delim.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}`));
  const parts: Part[] = [];
  let closed = false;
  for (const chunk of chunks.slice(1)) {
    if (chunk.startsWith('--')) {
      closed = true;
      break;
    }
    const p = splitMessage(chunk.replace(/^\r?\n/, ''));
    parts.push({ headers: p.headers, body: p.body });
  }
  return { headers, parts, closed };
}

export interface DeliveryStatus {
  message: Fields;
  recipients: Fields[];
}

export function parseDeliveryStatus(body: string): DeliveryStatus {
  const groups = body
    .split(/\r?\n\r?\n/)
    .map((g) => g.trim())
    .filter(Boolean)
    .map(parseFields);
  const [message = new Map(), ...recipients] = groups;
  return { message, recipients };
}

export interface ParsedDsn {
  headers: Fields;
  parts: Part[];
  human: string;
  status: DeliveryStatus;
  original?: Part;
}

/** Parses a multipart/report DSN and checks its shape (three parts at most, right types). */
export function parseDsn(raw: string): ParsedDsn {
  const { headers, parts, closed } = parseMultipart(raw);
  const ct = headers.get('content-type') ?? '';
  if (!/^multipart\/report\b/i.test(ct) || param(ct, 'report-type') !== 'delivery-status') {
    throw new Error(`not a delivery status report: ${ct}`);
  }
  if (!closed) throw new Error('multipart not closed');
  const [human, status, original] = parts;
  if (!human || !/^text\/plain/i.test(human.headers.get('content-type') ?? ''))
    throw new Error('no text part');
  if (!status || !/^message\/delivery-status/i.test(status.headers.get('content-type') ?? '')) {
    throw new Error('no message/delivery-status part');
  }
  return {
    headers,
    parts,
    human: human.body,
    status: parseDeliveryStatus(status.body),
    ...(original ? { original } : {}),
  };
}
