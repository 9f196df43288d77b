import { readFile } from 'node:fs/promises';
import { parse as parseYaml } from 'yaml';
import type { z } from 'zod';
import { configSchema, type RelayConfig } from './schema.ts';

/** A configuration that cannot be used; the CLI prints it and exits 2. */
export class ConfigError extends Error {
  constructor(
    message: string,
    readonly issues: string[] = [],
  ) {
    super(issues.length ? `${message}:\n${issues.map((i) => `  - ${i}`).join('\n')}` : message);
  }
}

/** Command-line overrides of `email-relay relay` (DESIGN.md's public CLI). */
export interface RelayFlags {
  listen?: string;
  http?: string;
  upstream?: string;
  spool?: string;
  allow?: string[];
  hostname?: string;
}

/** Environment overrides, for container images configured without a file. */
export const ENV_OVERRIDES: Record<string, (v: string) => Record<string, unknown>> = {
  EMAIL_RELAY_HOSTNAME: (v) => ({ hostname: v }),
  EMAIL_RELAY_LISTEN: (v) => ({ listen: v }),
  EMAIL_RELAY_HTTP: (v) => ({ http: v }),
  EMAIL_RELAY_UPSTREAM: (v) => ({ upstream: { url: v } }),
  EMAIL_RELAY_SPOOL: (v) => ({ spool: { dir: v } }),
  EMAIL_RELAY_ALLOW: (v) => ({ access: { allow: v.split(/[\s,]+/).filter(Boolean) } }),
  EMAIL_RELAY_LOG_LEVEL: (v) => ({ logLevel: v }),
};

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Deep merge of plain objects; arrays and scalars of `b` replace those of `a`. */
export function merge(a: Record<string, unknown>, b: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...a };
  for (const [k, v] of Object.entries(b)) {
    if (v === undefined) continue;
    const prev = out[k];
    out[k] = isPlainObject(prev) && isPlainObject(v) ? merge(prev, v) : v;
  }
  return out;
}

export function flagsToConfig(f: RelayFlags): Record<string, unknown> {
  return merge(
    {},
    {
      listen: f.listen,
      http: f.http,
      hostname: f.hostname,
      upstream: f.upstream !== undefined ? { url: f.upstream } : undefined,
      spool: f.spool !== undefined ? { dir: f.spool } : undefined,
      access: f.allow?.length ? { allow: f.allow } : undefined,
    },
  );
}

export function formatIssues(error: z.ZodError): string[] {
  return error.issues.map((i) => {
    const path = i.path.length ? i.path.join('.') : '(top level)';
    return `${path}: ${i.message}`;
  });
}

/** Validates a raw config object; throws ConfigError naming each bad field. */
export function parseConfig(raw: unknown, source = 'configuration'): RelayConfig {
  const result = configSchema.safeParse(raw);
  if (!result.success) throw new ConfigError(`invalid ${source}`, formatIssues(result.error));
  return result.data;
}

export async function readConfigFile(path: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read config file ${path}: ${(err as Error).message}`);
  }
  let doc: unknown;
  try {
    doc = parseYaml(text); // YAML is a superset of JSON: one parser for both
  } catch (err) {
    throw new ConfigError(`config file ${path} is not valid YAML/JSON: ${(err as Error).message}`);
  }
  if (doc === null || doc === undefined) return {};
  if (!isPlainObject(doc)) throw new ConfigError(`config file ${path} must hold a mapping at the top level`);
  return doc;
}

/** File, then environment, then flags: later wins. */
export async function loadConfig(opts: {
  file?: string;
  flags?: RelayFlags;
  env?: NodeJS.ProcessEnv;
}): Promise<RelayConfig> {
  let raw: Record<string, unknown> = opts.file ? await readConfigFile(opts.file) : {};
  const env = opts.env ?? process.env;
  for (const [name, toConfig] of Object.entries(ENV_OVERRIDES)) {
    const v = env[name];
    if (v !== undefined && v !== '') raw = merge(raw, toConfig(v));
  }
  if (opts.flags) raw = merge(raw, flagsToConfig(opts.flags));
  return parseConfig(raw, opts.file ? `configuration (${opts.file} + environment + flags)` : 'configuration');
}
