import { stringify } from 'yaml';
import { parseConfig } from '../../config/load.ts';
import type { RelayConfig, RelayConfigInput } from '../../config/schema.ts';
import type { EmailRelaySpec } from '../api/emailrelay.ts';
import type { ValidPolicy } from '../emailpolicy/select.ts';
import {
  childNames,
  PEERS_PORT,
  RELAY_CONFIG_KEY,
  ROUTE_SECRET_DIR,
  SPOOL_MOUNT,
  serviceHost,
  TLS_DIR,
  UPSTREAM_SECRET_DIR,
} from './names.ts';

/** Where the relay runs: its peers are the other pods behind its headless Service. */
export interface RelayPlace {
  name: string;
  namespace: string;
  clusterDomain?: string;
}

type TlsMode = EmailRelaySpec['upstream']['tls'];

const SCHEMES: Record<TlsMode, string> = {
  starttls: 'smtp+starttls',
  implicit: 'smtps',
  opportunistic: 'smtp',
};

/** The relay's upstream URL for a spec endpoint (see DESIGN.md's `--upstream`). */
export function upstreamUrl(u: { host: string; port: number; tls: TlsMode }): string {
  return `${SCHEMES[u.tls]}://${u.host}:${u.port}`;
}

/**
 * The relay configuration for the pods of a relay. Validated with the relay's own schema, so
 * the operator can never ship a config the relay would refuse (throws ConfigError naming fields).
 */
export function renderRelayConfig(
  spec: EmailRelaySpec,
  policies: readonly ValidPolicy[] = [],
  place?: RelayPlace,
): RelayConfig {
  const creds = spec.upstream.credentialsSecretRef;
  const input: RelayConfigInput = {
    hostname: spec.hostname,
    listen: `0.0.0.0:${spec.smtp.port}`,
    // Always on: kubelet probes use it even when metrics are not scraped.
    http: `0.0.0.0:${spec.metrics.port}`,
    spool: { dir: `${SPOOL_MOUNT}/queue`, fsync: true },
    smtp: {
      maxMessageSize: spec.smtp.maxMessageSize,
      maxRecipients: spec.smtp.maxRecipients,
      maxClients: spec.smtp.maxClients,
      addMissingFrom: spec.smtp.addMissingFrom,
      ...(spec.tls
        ? {
            tls: {
              certFile: `${TLS_DIR}/tls.crt`,
              keyFile: `${TLS_DIR}/tls.key`,
              required: spec.tls.required,
            },
          }
        : {}),
    },
    access: spec.access.attribution
      ? {
          allow: spec.access.extraCIDRs,
          kubernetes: { enabled: true, namespaceSelector: spec.access.namespaceSelector },
        }
      : { allow: [...spec.access.podCIDRs, ...spec.access.extraCIDRs] },
    upstream: {
      url: upstreamUrl(spec.upstream),
      outboxDir: `${SPOOL_MOUNT}/outbox`,
      maxConnections: spec.upstream.maxConnections,
      ...(spec.upstream.replyClasses
        ? {
            replyClasses: {
              profile: spec.upstream.replyClasses.profile,
              rules: spec.upstream.replyClasses.rules ?? [],
            },
          }
        : {}),
      routes: (spec.upstream.routes ?? []).map((r, i) => ({
        senderDomains: r.senderDomains,
        url: upstreamUrl(r),
        ...(r.replyClasses
          ? { replyClasses: { profile: r.replyClasses.profile, rules: r.replyClasses.rules ?? [] } }
          : {}),
        ...(r.credentialsSecretRef
          ? {
              auth: {
                method: r.credentialsSecretRef.method,
                userFile: `${ROUTE_SECRET_DIR}/${i}/${r.credentialsSecretRef.usernameKey}`,
                passwordFile: `${ROUTE_SECRET_DIR}/${i}/${r.credentialsSecretRef.passwordKey}`,
              },
            }
          : {}),
      })),
      ...(creds
        ? {
            auth: {
              method: creds.method,
              userFile: `${UPSTREAM_SECRET_DIR}/${creds.usernameKey}`,
              passwordFile: `${UPSTREAM_SECRET_DIR}/${creds.passwordKey}`,
            },
          }
        : {}),
    },
    queue: {
      retryInitialSeconds: spec.queue.retryInitialSeconds,
      retryMaxSeconds: spec.queue.retryMaxSeconds,
      retryMultiplier: spec.queue.retryMultiplier,
      maxLifetimeSeconds: spec.queue.lifetimeSeconds,
    },
    policies: policies.map(compilePolicy),
    ...(place ? { peers: renderPeers(spec, place) } : {}),
    shutdownGraceSeconds: spec.shutdownGraceSeconds,
    logLevel: spec.logLevel,
    // Only when set: existing relays keep their config hash (no rollout for an unused option).
    ...(spec.logAddresses !== 'plain' ? { logAddresses: spec.logAddresses } : {}),
  };
  return parseConfig(input, 'rendered relay configuration');
}

/**
 * The pods of one relay as peers. Hand-off is trusted by network identity: a pod of the relay's
 * own namespace (attribution), or, with attribution off, the pod networks narrowed to the
 * relay's pods by the peers NetworkPolicy. A StatefulSet pod hands off on SIGTERM only when the
 * operator marked it for a scale-down (its volume comes back otherwise); a Deployment's queue is
 * an emptyDir that dies with the pod, so it always hands off.
 */
function renderPeers(spec: EmailRelaySpec, place: RelayPlace): NonNullable<RelayConfigInput['peers']> {
  const headless = serviceHost(childNames(place.name).headless, place.namespace, place.clusterDomain);
  const persistent = spec.queue.persistence.enabled;
  return {
    listen: `0.0.0.0:${PEERS_PORT}`,
    address: `${headless}:${PEERS_PORT}`,
    trust: spec.access.attribution ? { namespaces: [place.namespace] } : { networks: spec.access.podCIDRs },
    drainOnShutdown: !persistent ? 'always' : spec.access.attribution ? 'whenMarked' : 'never',
    drainTimeoutSeconds: spec.queue.drainTimeoutSeconds,
  };
}

/**
 * An EmailPolicy as the relay enforces it (src/config/policy.ts): the rules unchanged (one
 * schema for both), the client namespaces as the relay matches them. Order is evaluation order.
 */
export function compilePolicy(p: ValidPolicy): NonNullable<RelayConfigInput['policies']>[number] {
  const clients = p.spec.clientNamespaces;
  return {
    name: `${p.namespace}/${p.name}`,
    match: {
      ...(clients?.names ? { namespaces: clients.names } : {}),
      ...(clients?.selector ? { namespaceSelector: clients.selector } : {}),
    },
    rules: p.spec.rules,
  };
}

const yaml = (doc: unknown) => stringify(doc, { lineWidth: 0 });

/** The ConfigMap data: the relay config plus the documents beside it. */
export function renderConfigData(
  spec: EmailRelaySpec,
  policies: readonly ValidPolicy[],
  place?: RelayPlace,
): Record<string, string> {
  const header = '# Rendered by email-relay-operator from the EmailRelay; edits are overwritten.\n';
  return {
    [RELAY_CONFIG_KEY]: header + yaml(renderRelayConfig(spec, policies, place)),
  };
}
