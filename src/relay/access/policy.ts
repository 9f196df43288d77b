import type { Policy } from '../../config/policy.ts';
import { matchesSelector } from '../../lib/label-selector.ts';
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

  /** Policies in evaluation order (the operator sorts them by priority, then name). */
  constructor(policies: readonly Policy[]) {
    this.compiled = policies.map((policy) => ({
      policy,
      ...(policy.match.clients ? { networks: new Networks(policy.match.clients) } : {}),
    }));
  }

  get size(): number {
    return this.compiled.length;
  }

  /** The policies that apply to this client; `labels` are its namespace's labels, when known. */
  forClient(client: ClientInfo, labels?: Record<string, string>): Policy[] {
    return this.compiled
      .filter(({ policy, networks }) => {
        const { namespaces, namespaceSelector } = policy.match;
        if (namespaces || namespaceSelector) {
          const ns = client.namespace;
          const byName = !!ns && !!namespaces?.includes(ns);
          const byLabel =
            !!ns && !!namespaceSelector && !!labels && matchesSelector(namespaceSelector, labels);
          if (!byName && !byLabel) return false;
        }
        return !networks || networks.contains(client.address);
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

/** user@domain exactly; @domain or *@domain: anyone there; the domain may be *.domain. */
export function addressMatches(addr: string, pattern: string): boolean {
  const at = pattern.lastIndexOf('@');
  const local = pattern.slice(0, at);
  const a = addr.toLowerCase();
  if (!domainMatches(domainOf(a), pattern.slice(at + 1))) return false;
  return local === '' || local === '*' || local.toLowerCase() === a.slice(0, a.lastIndexOf('@'));
}

function senderAllowed(p: Policy, addr: string): boolean {
  const s = p.rules.senders;
  if (!s || (!s.domains && !s.addresses)) return true;
  return (
    !!s.domains?.some((d) => domainMatches(domainOf(addr), d)) ||
    !!s.addresses?.some((x) => addressMatches(addr, x))
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
  // Denials first: a recipient any policy denies is refused as denied, whatever else allows it.
  for (const p of policies) {
    if (p.rules.recipients?.deny?.some((x) => addressMatches(rcpt, x))) {
      return { policy: p.name, rule: 'recipient-deny', detail: `recipient ${rcpt} is denied` };
    }
  }
  for (const p of policies) {
    const allow = p.rules.recipients?.allow;
    if (allow && !allow.some((x) => addressMatches(rcpt, x))) {
      return { policy: p.name, rule: 'recipient-allow', detail: `recipient ${rcpt} is not allowed` };
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
  rewriteSender?: { to: string; rewriteHeaderFrom: boolean; policy: string };
}

/**
 * Header edits and sender rewriting of the matching policies for this sender: adds and removes
 * are unioned (the first policy's value wins for a header added twice); the first policy whose
 * rewriteSender applies to the sender rewrites it.
 */
export function headerEdits(policies: Policy[], sender: string): HeaderEdits {
  const add = new Map<string, [string, string]>();
  const remove = new Set<string>();
  let rewriteSender: HeaderEdits['rewriteSender'];
  for (const p of policies) {
    const h = p.rules.headers;
    for (const { name, value } of h?.add ?? [])
      if (!add.has(name.toLowerCase())) add.set(name.toLowerCase(), [name, value]);
    for (const k of h?.remove ?? []) remove.add(k.toLowerCase());
    const r = p.rules.rewriteSender;
    if (r && !rewriteSender && sender && (!r.from || addressMatches(sender, r.from))) {
      rewriteSender = { to: r.to, rewriteHeaderFrom: r.rewriteHeaderFrom, policy: p.name };
    }
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
    if (name === 'from' && edits.rewriteSender?.rewriteHeaderFrom) {
      const value = f
        .slice(f.indexOf(':') + 1)
        .replace(/\r\n[ \t]+/g, ' ')
        .trim();
      const display = /^(.*?)<[^>]*>\s*$/.exec(value)?.[1]?.trim();
      out.push(`X-Original-From: ${value}\r\n`);
      out.push(`From: ${display ? `${display} ` : ''}<${edits.rewriteSender.to}>\r\n`);
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
