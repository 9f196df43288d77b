import type { EmailRelayStatus } from '../api/emailrelay.ts';
import type { KubeObject } from '../api/meta.ts';
import type { ConditionInput } from '../runtime/conditions.ts';
import { claimName, drainJobName, ordinalOf } from './names.ts';

/**
 * The queue as data the operator owns (pure functions; the reconciler does the I/O):
 * which pods a scale-down removes (marked so they hand their queue off before they go), which
 * queue volumes no pod serves (a drain Job empties each), and the totals of the pods' /summary.
 */

/** What a relay's /summary says (src/relay/summary.ts; only the fields read here). */
export interface PodSummary {
  queue: { messages: number; deferred: number; oldestReceivedAt?: string };
  lastHour: { delivered: number; bounced: number };
  upstreams: {
    name: string;
    state: string;
    healthy: boolean;
    lastSuccessAt?: string;
    lastRefusal?: { reply: string; at: string };
    /** The route's hold (src/relay/delivery RouteHealth; only the fields read here). */
    health?: { state: string; since: string; held: number; lastRefusal?: { text: string } };
  }[];
}

/** "10:42 UTC": when a hold began, as `kubectl describe` readers want it. */
const clock = (iso: string) => `${iso.slice(11, 16)} UTC`;

interface PodLike extends KubeObject {
  status?: {
    phase?: string;
    podIP?: string;
    containerStatuses?: { state?: { terminated?: { exitCode?: number; message?: string } } }[];
  };
}

interface JobLike extends KubeObject {
  status?: { succeeded?: number; failed?: number; active?: number };
}

/** Pods `<relay>-<n>` with n >= replicas carry the drain mark, the others not. */
export function drainMarks(
  relay: string,
  replicas: number,
  pods: readonly KubeObject[],
  annotation: string,
): { mark: string[]; unmark: string[] } {
  const mark: string[] = [];
  const unmark: string[] = [];
  for (const pod of pods) {
    const n = ordinalOf(relay, pod.metadata.name);
    if (n === undefined) continue;
    const marked = pod.metadata.annotations?.[annotation] === 'true';
    if (n >= replicas && !marked && !pod.metadata.deletionTimestamp) mark.push(pod.metadata.name);
    if (n < replicas && marked) unmark.push(pod.metadata.name);
  }
  return { mark: mark.sort(), unmark: unmark.sort() };
}

export interface StrandedPlan {
  /** Claims no pod serves, not yet emptied by a Job. */
  stranded: { claim: string; ordinal: number; job: string }[];
  /** Ordinals whose drain Job must be created. */
  create: number[];
  /** Finished Jobs of ordinals that are back in service (a later scale-down needs a new one). */
  remove: string[];
  /** Jobs that emptied their claim. */
  drained: { claim: string; ordinal: number; job: string }[];
}

/**
 * A claim spool-<relay>-<n> with n >= replicas is stranded while no pod <relay>-<n> exists (a
 * pod still terminating may be handing its queue off) and no Job of it has succeeded. Its Job
 * is created once the pod is gone; a succeeded Job stays as the record that the claim is empty
 * until the ordinal serves again.
 */
export function planStranded(
  relay: string,
  replicas: number,
  pods: readonly KubeObject[],
  claims: readonly KubeObject[],
  jobs: readonly JobLike[],
): StrandedPlan {
  const plan: StrandedPlan = { stranded: [], create: [], remove: [], drained: [] };
  const podNames = new Set(pods.map((p) => p.metadata.name));
  const jobByName = new Map(jobs.map((j) => [j.metadata.name, j]));
  const base = claimName(relay, 0).replace(/-0$/, '');
  const ordinals = claims
    .filter((c) => !c.metadata.deletionTimestamp)
    .map((c) => ordinalOf(base, c.metadata.name))
    .filter((n): n is number => n !== undefined)
    .sort((a, b) => a - b);
  for (const n of ordinals) {
    const job = drainJobName(relay, n);
    const existing = jobByName.get(job);
    if (n < replicas) {
      if (existing && !existing.status?.active) plan.remove.push(job);
      continue;
    }
    if ((existing?.status?.succeeded ?? 0) > 0) {
      plan.drained.push({ claim: claimName(relay, n), ordinal: n, job });
      continue;
    }
    if (podNames.has(`${relay}-${n}`)) continue; // still there: it hands off itself, or is leaving
    plan.stranded.push({ claim: claimName(relay, n), ordinal: n, job });
    if (!existing) plan.create.push(n);
  }
  return plan;
}

/** The drain report a Job's pod left in its termination message (relay/drain-only.ts). */
export function drainReport(
  pods: readonly PodLike[],
  job: string,
): { handedOff: number; delivered: number } | undefined {
  for (const p of pods) {
    if (p.metadata.labels?.['job-name'] !== job) continue;
    const msg = p.status?.containerStatuses?.[0]?.state?.terminated?.message;
    if (!msg) continue;
    try {
      const r = JSON.parse(msg) as { handedOff?: number; delivered?: number };
      return { handedOff: r.handedOff ?? 0, delivered: r.delivered ?? 0 };
    } catch {
      // not ours
    }
  }
  return undefined;
}

/** Reads /summary of each pod that has an address (in parallel, short timeout). */
export async function gatherSummaries(
  pods: readonly PodLike[],
  port: number,
  timeoutMs = 2000,
): Promise<Map<string, PodSummary>> {
  const out = new Map<string, PodSummary>();
  await Promise.all(
    pods.map(async (p) => {
      const ip = p.status?.podIP;
      if (!ip || p.status?.phase !== 'Running') return;
      const host = ip.includes(':') ? `[${ip}]` : ip;
      try {
        const res = await fetch(`http://${host}:${port}/summary`, { signal: AbortSignal.timeout(timeoutMs) });
        if (res.ok) out.set(p.metadata.name, (await res.json()) as PodSummary);
      } catch {
        // unreachable right now (starting, stopping): counted as not reporting
      }
    }),
  );
  return out;
}

type QueueStatus = NonNullable<EmailRelayStatus['queue']>;

const secondsIso = (iso: string) => iso.replace(/\.\d{3}Z$/, 'Z');

/** Totals over the pods that answered. */
export function queueTotals(summaries: ReadonlyMap<string, PodSummary>): QueueStatus {
  let queued = 0;
  let deferred = 0;
  let delivered = 0;
  let bounced = 0;
  let oldest: string | undefined;
  let refusal: QueueStatus['lastRefusal'];
  for (const [pod, s] of summaries) {
    queued += s.queue.messages;
    deferred += s.queue.deferred;
    delivered += s.lastHour.delivered;
    bounced += s.lastHour.bounced;
    const o = s.queue.oldestReceivedAt;
    if (o && (!oldest || Date.parse(o) < Date.parse(oldest))) oldest = o;
    for (const u of s.upstreams) {
      const r = u.lastRefusal;
      if (r && (!refusal || Date.parse(r.at) > Date.parse(refusal.at)))
        refusal = { reply: r.reply, at: secondsIso(r.at), upstream: u.name, pod };
    }
  }
  return {
    queued,
    deferred,
    ...(oldest ? { oldestQueuedAt: secondsIso(oldest) } : {}),
    deliveredLastHour: delivered,
    bouncedLastHour: bounced,
    ...(refusal ? { lastRefusal: refusal } : {}),
    pods: summaries.size,
  };
}

/**
 * UpstreamHealthy: per upstream, the latest word across pods decides (a refusal newer than any
 * success, or every pod's breaker open, is unhealthy); the message is the upstream's own reply,
 * e.g. Google's "550 5.7.0 Mail relay denied [IP]. Invalid credentials for relay ...".
 */
export function upstreamCondition(
  summaries: ReadonlyMap<string, PodSummary>,
  generation: number,
): ConditionInput {
  const base = { type: 'UpstreamHealthy', observedGeneration: generation };
  if (!summaries.size)
    return { ...base, status: 'Unknown', reason: 'NoSummary', message: 'no relay pod answered on /summary' };
  const byName = new Map<
    string,
    {
      success: number;
      refusal?: { reply: string; at: number };
      open: number;
      n: number;
      /** Pods holding this route for a relay-wide refusal: earliest start, mail held across them. */
      hold?: { since: string; held: number; text: string };
    }
  >();
  for (const s of summaries.values()) {
    for (const u of s.upstreams) {
      const e = byName.get(u.name) ?? { success: 0, open: 0, n: 0 };
      e.n++;
      if (u.state === 'open') e.open++;
      if (u.lastSuccessAt) e.success = Math.max(e.success, Date.parse(u.lastSuccessAt));
      const r = u.lastRefusal;
      if (r && (!e.refusal || Date.parse(r.at) > e.refusal.at))
        e.refusal = { reply: r.reply, at: Date.parse(r.at) };
      const h = u.health;
      if (h?.state === 'held' && h.lastRefusal) {
        e.hold = {
          since: e.hold && e.hold.since < h.since ? e.hold.since : h.since,
          held: (e.hold?.held ?? 0) + h.held,
          text: h.lastRefusal.text,
        };
      }
      byName.set(u.name, e);
    }
  }
  const bad: {
    name: string;
    reply: string;
    refused: boolean;
    hold?: { since: string; held: number; text: string };
  }[] = [];
  for (const [name, e] of byName) {
    const refused = e.hold !== undefined || (e.refusal !== undefined && e.refusal.at > e.success);
    if (refused || e.open === e.n)
      bad.push({
        name,
        reply: e.refusal?.reply ?? e.hold?.text ?? 'unreachable',
        refused,
        ...(e.hold ? { hold: e.hold } : {}),
      });
  }
  if (!bad.length) {
    return {
      ...base,
      status: 'True',
      reason: 'Accepting',
      message: byName.size
        ? `${[...byName.keys()].join(', ')}: no refusal since the last delivery`
        : 'no upstream',
    };
  }
  // A reply with an SMTP code is the upstream refusing; anything else is a failed dial.
  const refusing = bad.some((b) => b.hold || /^[45]\d\d[ -]/.test(b.reply));
  return {
    ...base,
    status: 'False',
    reason: refusing ? 'UpstreamRefused' : 'UpstreamUnreachable',
    // A held route (a relay-wide refusal) says who refuses, in the upstream's words, since when and
    // how much mail waits for it: what `kubectl describe` should answer first.
    message: bad
      .map((b) =>
        b.hold
          ? `${b.name} refuses this relay: ${b.hold.text} since ${clock(b.hold.since)}, ${b.hold.held} messages held`
          : `${b.name}: ${b.reply}`,
      )
      .join('; '),
  };
}
