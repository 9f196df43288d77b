import { open } from 'node:fs/promises';

/**
 * The kube-apiserver's audit log (JSON lines, Metadata level, the operator's user only; see
 * auditPolicy in operator-cluster.ts): what the operator asked of the API server, counted where
 * it arrived rather than by the operator's own bookkeeping.
 */

export interface AuditEntry {
  /** stageTimestamp, ms since the epoch (the apiserver runs on this machine: same clock) */
  t: number;
  user: string;
  verb: string;
  /** group/resource[/subresource], e.g. apps/statefulsets, email.bionicaisolutions.com/emailrelays/status */
  resource: string;
  namespace?: string;
  name?: string;
  code: number;
}

export const WRITE_VERBS = new Set(['create', 'update', 'patch', 'delete', 'deletecollection']);
export const isWrite = (e: AuditEntry) => WRITE_VERBS.has(e.verb);
/** The Lease renewals of leader election: writes, but on a timer, not part of a resync. */
export const isLease = (e: AuditEntry) => e.resource === 'coordination.k8s.io/leases';

interface RawEvent {
  stage?: string;
  verb?: string;
  user?: { username?: string };
  objectRef?: {
    apiGroup?: string;
    resource?: string;
    subresource?: string;
    namespace?: string;
    name?: string;
  };
  responseStatus?: { code?: number };
  requestURI?: string;
  stageTimestamp?: string;
}

export class AuditLog {
  private offset = 0;
  private partial = '';
  readonly entries: AuditEntry[] = [];

  constructor(readonly path: string) {}

  /** Reads what the apiserver appended since the last call. */
  async refresh(): Promise<AuditEntry[]> {
    const fh = await open(this.path, 'r').catch(() => undefined);
    if (!fh) return this.entries;
    try {
      const { size } = await fh.stat();
      if (size > this.offset) {
        const buf = Buffer.alloc(size - this.offset);
        const { bytesRead } = await fh.read(buf, 0, buf.length, this.offset);
        this.offset += bytesRead;
        const text = this.partial + buf.subarray(0, bytesRead).toString('utf8');
        const lines = text.split('\n');
        this.partial = lines.pop() ?? '';
        for (const line of lines) if (line.trim()) this.entries.push(parse(JSON.parse(line) as RawEvent));
      }
    } finally {
      await fh.close();
    }
    return this.entries;
  }

  /** Entries with t0 <= t <= t1 (ms since the epoch), after reading what is new. */
  async between(t0: number, t1 = Number.POSITIVE_INFINITY): Promise<AuditEntry[]> {
    await this.refresh();
    return this.entries.filter((e) => e.t >= t0 && e.t <= t1);
  }
}

function parse(ev: RawEvent): AuditEntry {
  const o = ev.objectRef ?? {};
  const resource = [o.apiGroup, o.resource ?? ev.requestURI?.split('?')[0], o.subresource]
    .filter(Boolean)
    .join('/');
  return {
    t: Date.parse(ev.stageTimestamp ?? ''),
    user: ev.user?.username ?? '',
    verb: ev.verb ?? '',
    resource,
    ...(o.namespace ? { namespace: o.namespace } : {}),
    ...(o.name ? { name: o.name } : {}),
    code: ev.responseStatus?.code ?? 0,
  };
}

export interface RequestCounts {
  total: number;
  byVerb: Record<string, number>;
  /** "verb resource" -> count, writes only */
  writes: Record<string, number>;
  writeTotal: number;
  /** Lease writes of leader election, included in the figures above */
  leaseWrites: number;
  /** responses >= 400 by "verb resource code" */
  failed: Record<string, number>;
}

const inc = (m: Record<string, number>, k: string) => {
  m[k] = (m[k] ?? 0) + 1;
};

const sorted = (m: Record<string, number>) =>
  Object.fromEntries(Object.entries(m).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0])));

export function countRequests(entries: AuditEntry[]): RequestCounts {
  const byVerb: Record<string, number> = {};
  const writes: Record<string, number> = {};
  const failed: Record<string, number> = {};
  let leaseWrites = 0;
  for (const e of entries) {
    inc(byVerb, e.verb);
    if (isWrite(e)) {
      inc(writes, `${e.verb} ${e.resource}`);
      if (isLease(e)) leaseWrites++;
    }
    if (e.code >= 400) inc(failed, `${e.verb} ${e.resource} ${e.code}`);
  }
  return {
    total: entries.length,
    byVerb: sorted(byVerb),
    writes: sorted(writes),
    writeTotal: Object.values(writes).reduce((a, b) => a + b, 0),
    leaseWrites,
    failed: sorted(failed),
  };
}

/** The writes of a steady-state window that are not Lease renewals, each named, for the report. */
export function resyncWrites(entries: AuditEntry[], limit = 20): { count: number; sample: string[] } {
  const w = entries.filter((e) => isWrite(e) && !isLease(e));
  return {
    count: w.length,
    sample: w
      .slice(0, limit)
      .map((e) => `${e.verb} ${e.resource} ${[e.namespace, e.name].filter(Boolean).join('/')} ${e.code}`),
  };
}
