import type { QuarantinedMessage, QueuedMessage } from './spool/types.ts';

/** `mailq`-style listing, so admins who know Postfix read it at a glance. */
export function formatQueue(messages: QueuedMessage[], now = Date.now()): string {
  if (!messages.length) return 'Mail queue is empty\n';
  const lines = ['-Queue ID-       --Size-- ----Arrival Time---- -Sender/Recipient-------'];
  let bytes = 0;
  for (const m of messages) {
    bytes += m.size;
    const due =
      m.nextAttemptAt <= now ? '' : `  (next attempt in ${Math.ceil((m.nextAttemptAt - now) / 1000)}s)`;
    lines.push(
      `${m.id.padEnd(16)} ${String(m.size).padStart(8)} ${arrival(m.receivedAt)}  ${m.from || 'MAILER-DAEMON'}${due}`,
    );
    for (const r of m.recipients) {
      if (r.status !== 'pending') continue;
      if (r.lastReply) lines.push(`${' '.repeat(47)}(${r.lastReply.slice(0, 200)})`);
      lines.push(`${' '.repeat(47)}${r.address}`);
    }
    lines.push('');
  }
  const n = messages.length;
  lines.push(`-- ${Math.ceil(bytes / 1024)} Kbytes in ${n} Request${n === 1 ? '' : 's'}.`);
  return `${lines.join('\n')}\n`;
}

/** "Wed Nov 25 05:15:53", as mailq prints it (UTC). */
function arrival(ms: number): string {
  const d = new Date(ms).toUTCString(); // "Wed, 25 Nov 2026 05:15:53 GMT"
  const [wd, day, mon, , time] = d.replace(',', '').split(' ');
  return `${wd} ${mon} ${day!.padStart(2, ' ')} ${time}`;
}

/** One message in full, for `queue show ID`. */
export function formatMessage(m: QueuedMessage, headers: string): string {
  const out = [
    `queue id:     ${m.id}`,
    `from:         ${m.from || '<> (MAILER-DAEMON)'}`,
    `size:         ${m.size}`,
    `received:     ${new Date(m.receivedAt).toISOString()} from ${m.client.address}${m.client.namespace ? ` (${m.client.namespace}/${m.client.pod ?? '?'})` : ''}`,
    `attempts:     ${m.attempts}`,
    `next attempt: ${new Date(m.nextAttemptAt).toISOString()}`,
    ...(m.messageId ? [`message-id:   ${m.messageId}`] : []),
    ...(m.dsn?.envid || m.dsn?.ret ? [`dsn:          ${JSON.stringify(m.dsn)}`] : []),
    'recipients:',
    ...m.recipients.map(
      (r) =>
        `  ${r.status.padEnd(8)} ${r.address}${r.notify ? ` NOTIFY=${r.notify.join(',')}` : ''}${r.lastReply ? `  (${r.lastReply})` : ''}`,
    ),
    '',
    headers.trimEnd(),
  ];
  return `${out.join('\n')}\n`;
}

/** Messages the spool keeps out of delivery (unreadable files, a body gone): after the queue. */
export function formatQuarantine(q: QuarantinedMessage[], spoolDir: string): string {
  if (!q.length) return '';
  const lines = [
    '',
    `-- ${q.length} quarantined (not delivered: their files could not be read; kept in ${spoolDir}/quarantine/):`,
  ];
  for (const m of q) lines.push(`${m.id.padEnd(16)} ${m.files.join(' ')}`);
  return `${lines.join('\n')}\n`;
}
