import type { Policy } from '../../config/policy.ts';
import type { ClientInfo } from '../spool/types.ts';
import { Networks } from './networks.ts';

/**
 * Policy evaluation, pure: which policies apply to a client, and whether an address or a message
 * passes them. When several policies match, each constraint must pass in every one of them
 * (the strictest wins), and a refusal names the policy and the rule that refused.
 */

export interface Refusal {
  policy: string;
  rule: 'sender' | 'from-header' | 'recipient-allow' | 'recipient-deny' | 'size' | 'recipients' | 'rate';
  detail: string;
}

interface Compiled {
  policy: Policy;
  networks?: Networks;
}

export class PolicySet {
  private readonly compiled: Compiled[];

  constructor(policies: readonly Policy[]) {
    // Sorted by name so that choices among matching policies (sender rewriting) are deterministic.
    this.compiled = [...policies]
      .sort((a, b) => a.name.localeCompare(b.name))
      .map((policy) => ({
        policy,
        ...(policy.match.clients ? { networks: new Networks(policy.match.clients) } : {}),
      }));
  }

  get size(): number {
    return this.compiled.length;
  }

  /** The policies that apply to this client. */
  forClient(client: ClientInfo): Policy[] {
    return this.compiled
      .filter(({ policy, networks }) => {
        const ns = policy.match.namespaces;
        if (ns && (!client.namespace || !ns.includes(client.namespace))) return false;
        if (networks && !networks.contains(client.address)) return false;
        return true;
      })
      .map((c) => c.policy);
  }
}

const domainOf = (addr: string) => addr.slice(addr.lastIndexOf('@') + 1).toLowerCase();

/** example.com matches only itself; *.example.com matches its subdomains (not itself). */
export function domainMatches(domain: string, pattern: string): boolean {
  const d = domain.toLowerCase().replace(/\.$/, '');
  const p = pattern.toLowerCase();
  return p.startsWith('*.') ? d.endsWith(p.slice(1)) : d === p;
}

function senderAllowed(p: Policy, addr: string): boolean {
  if (!p.senders) return true;
  const a = addr.toLowerCase();
  return (
    p.senders.addresses.some((x) => x.toLowerCase() === a) ||
    p.senders.domains.some((d) => domainMatches(domainOf(a), d))
  );
}

/** Envelope sender check (the null sender of a bounce passes: it has no domain to vouch for). */
export function checkSender(policies: Policy[], sender: string): Refusal | undefined {
  if (!sender) return undefined;
  for (const p of policies) {
    if (!senderAllowed(p, sender))
      return { policy: p.name, rule: 'sender', detail: `sender ${sender} is not allowed` };
  }
  return undefined;
}

/** From: header addresses check. */
export function checkFromHeader(policies: Policy[], from: string[]): Refusal | undefined {
  for (const p of policies) {
    for (const a of from) {
      if (!senderAllowed(p, a))
        return { policy: p.name, rule: 'from-header', detail: `From: ${a} is not allowed` };
    }
  }
  return undefined;
}

export function checkRecipient(policies: Policy[], rcpt: string): Refusal | undefined {
  const d = domainOf(rcpt);
  const a = rcpt.toLowerCase();
  // Denials first: a recipient any policy denies is refused as denied, whatever else allows it.
  for (const p of policies) {
    const r = p.recipients;
    if (
      r &&
      (r.denyAddresses.some((x) => x.toLowerCase() === a) || r.denyDomains.some((x) => domainMatches(d, x)))
    ) {
      return { policy: p.name, rule: 'recipient-deny', detail: `recipient ${rcpt} is denied` };
    }
  }
  for (const p of policies) {
    const allow = p.recipients?.allowDomains;
    if (allow && !allow.some((x) => domainMatches(d, x))) {
      return { policy: p.name, rule: 'recipient-allow', detail: `recipient domain ${d} is not allowed` };
    }
  }
  return undefined;
}

/** The smallest limit among the policies that set it, with the policy that set it. */
export function strictest(
  policies: Policy[],
  pick: (p: Policy) => number | undefined,
): { limit: number; policy: string } | undefined {
  let best: { limit: number; policy: string } | undefined;
  for (const p of policies) {
    const v = pick(p);
    if (v !== undefined && (!best || v < best.limit)) best = { limit: v, policy: p.name };
  }
  return best;
}

export interface HeaderEdits {
  add: [string, string][];
  remove: Set<string>;
  rewriteSender?: { address: string; policy: string };
}

/** Header edits and sender rewriting of the matching policies: adds and removes are unioned. */
export function headerEdits(policies: Policy[]): HeaderEdits {
  const add = new Map<string, [string, string]>();
  const remove = new Set<string>();
  let rewriteSender: HeaderEdits['rewriteSender'];
  for (const p of policies) {
    for (const [k, v] of Object.entries(p.headers?.add ?? {}))
      if (!add.has(k.toLowerCase())) add.set(k.toLowerCase(), [k, v]);
    for (const k of p.headers?.remove ?? []) remove.add(k.toLowerCase());
    if (p.rewriteSender && !rewriteSender) rewriteSender = { address: p.rewriteSender, policy: p.name };
  }
  return { add: [...add.values()], remove, ...(rewriteSender ? { rewriteSender } : {}) };
}

/** Addresses in a From: header value ("A <a@x>, b@y"), lower-cased. */
export function fromAddresses(value: string): string[] {
  const out: string[] = [];
  const noComments = value.replace(/\([^()]*\)/g, ' ');
  for (const m of noComments.matchAll(/<([^<>\s]+@[^<>\s]+)>|([^\s<>",:;]+@[^\s<>",:;]+)/g)) {
    out.push((m[1] ?? m[2]!).toLowerCase());
  }
  return out;
}

/**
 * Applies removals, the From: rewrite and additions to a CRLF header block (ending in CRLF).
 * A rewritten From keeps its display name; the original goes into X-Original-From for audits.
 */
export function editHeaders(block: string, edits: HeaderEdits): string {
  const fields = splitFields(block);
  const out: string[] = [];
  for (const f of fields) {
    const name = f.slice(0, f.indexOf(':')).trim().toLowerCase();
    if (edits.remove.has(name)) continue;
    if (name === 'from' && edits.rewriteSender) {
      const value = f
        .slice(f.indexOf(':') + 1)
        .replace(/\r\n[ \t]+/g, ' ')
        .trim();
      const display = /^(.*?)<[^>]*>\s*$/.exec(value)?.[1]?.trim();
      out.push(`X-Original-From: ${value}\r\n`);
      out.push(`From: ${display ? `${display} ` : ''}<${edits.rewriteSender.address}>\r\n`);
      continue;
    }
    out.push(f);
  }
  for (const [k, v] of edits.add) out.push(`${k}: ${v}\r\n`);
  return out.join('');
}

/** Header fields of a block, each with its continuation lines and final CRLF. */
export function splitFields(block: string): string[] {
  const fields: string[] = [];
  for (const line of block.split(/(?<=\r\n)/)) {
    if (!line) continue;
    if ((line.startsWith(' ') || line.startsWith('\t')) && fields.length) fields[fields.length - 1] += line;
    else fields.push(line);
  }
  return fields;
}
