import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import {
  CHART_DIR,
  kustomizeBase,
  kustomizeNamespaced,
  renderChart,
  staleChartFiles,
} from '../../../scripts/gen-helm.ts';
import { dashboardConfigMap, podMonitors, prometheusRule } from '../../../scripts/gen-monitoring.ts';
import { cachedBinDir } from '../../control-plane/paths.ts';

// The chart against its sources: helm (built from helm.sh/helm/v4 like the control plane, cached;
// `npm run control-plane -- build`) renders with default values exactly what kustomize renders
// from deploy/base; with values set, exactly those fields change; helm lint passes.

const run = promisify(execFile);
type Obj = {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string };
  [k: string]: unknown;
};
const key = (o: Obj) => `${o.kind}/${o.metadata.namespace ?? ''}/${o.metadata.name}`;
const byKey = (objs: Obj[]) => new Map(objs.map((o) => [key(o), o]));

describe('Helm chart deploy/helm/email-relay', () => {
  let helm: string;
  const template = async (...args: string[]) => {
    const { stdout } = await run(helm, ['template', 'email-relay', CHART_DIR, ...args], {
      maxBuffer: 64 << 20,
    });
    return parseAllDocuments(stdout)
      .map((d) => d.toJSON() as Obj | null)
      .filter((o): o is Obj => !!o);
  };

  beforeAll(() => {
    helm = join(cachedBinDir(), 'helm');
    if (!existsSync(helm))
      throw new Error(`${helm} missing: run npm run control-plane -- build (scripts/test.sh does)`);
  });

  it('is generated from deploy/base and deploy/monitoring as they are now', async () => {
    expect(await staleChartFiles(await renderChart()), 'stale chart: run npm run helm-chart').toEqual([]);
  });

  it('helm lint passes, with and without the monitoring objects', async () => {
    const plain = await run(helm, ['lint', '--strict', CHART_DIR]);
    expect(plain.stdout).toMatch(/1 chart\(s\) linted, 0 chart\(s\) failed/);
    const all = await run(helm, [
      'lint',
      '--strict',
      CHART_DIR,
      ...['podMonitor', 'serviceMonitor', 'prometheusRule', 'dashboard'].flatMap((m) => [
        '--set',
        `monitoring.${m}.enabled=true`,
      ]),
    ]);
    expect(all.stdout).toMatch(/0 chart\(s\) failed/);
  });

  it('helm template with default values equals kubectl kustomize deploy/base (the Namespace aside)', async () => {
    const chart = byKey(await template('--namespace', 'email-relay-system', '--include-crds'));
    const base = byKey(kustomizeBase().filter((o) => o.kind !== 'Namespace') as Obj[]);
    expect([...chart.keys()].sort()).toEqual([...base.keys()].sort());
    for (const [k, o] of base) expect(chart.get(k), k).toEqual(o);
  });

  it('namespaced values (namespaces, relays) equal kubectl kustomize deploy/namespaced: Roles only', async () => {
    const chart = byKey(
      await template(
        '--namespace',
        'email-relay-system',
        '--include-crds',
        '--set-json',
        'namespaced.namespaces=["email-server-prod"]',
        '--set-json',
        'namespaced.relays=[{"name":"postfix-relay","namespace":"email-server-prod"}]',
      ),
    );
    const namespaced = byKey(kustomizeNamespaced().filter((o) => o.kind !== 'Namespace') as Obj[]);
    expect([...chart.keys()].sort()).toEqual([...namespaced.keys()].sort());
    for (const [k, o] of namespaced) expect(chart.get(k), k).toEqual(o);
    // One Role and RoleBinding per namespace, and --namespace lists them all.
    const two = await template('--namespace', 'ops', '--set-json', 'namespaced.namespaces=["a","b"]');
    expect(
      two
        .filter((o) => o.kind === 'Role' && o.metadata.name === 'email-relay-operator')
        .map((o) => o.metadata.namespace),
    ).toEqual(['a', 'b']);
    const dep = two.find((o) => o.kind === 'Deployment') as unknown as {
      spec: { template: { spec: { containers: { args: string[] }[] } } };
    };
    expect(dep.spec.template.spec.containers[0]?.args).toEqual([
      'operator',
      '--http',
      '0.0.0.0:8080',
      '--namespace',
      'a,b',
    ]);
  });

  it('values change exactly their fields: namespace, image (also given to relays), replicas, resources, args', async () => {
    const objs = await template(
      '--namespace',
      'mail-ops',
      '--set',
      'image.tag=9.9.9',
      '--set',
      'operator.replicas=3',
      '--set',
      'operator.resources.limits.memory=1Gi',
      '--set-json',
      'operator.extraArgs=["--namespace","team-a,team-b"]',
    );
    for (const o of objs)
      if (o.kind !== 'ClusterRole' && o.kind !== 'ClusterRoleBinding')
        expect(o.metadata.namespace, key(o)).toBe('mail-ops');
    const crb = objs.find(
      (o) => o.kind === 'ClusterRoleBinding' && o.metadata.name === 'email-relay-operator',
    ) as unknown as {
      subjects: { namespace: string }[];
    };
    expect(crb.subjects[0]!.namespace).toBe('mail-ops');
    const dep = objs.find((o) => o.kind === 'Deployment') as unknown as {
      spec: {
        replicas: number;
        template: {
          spec: {
            containers: {
              image: string;
              args: string[];
              resources: { limits: { memory: string } };
              env: { name: string; value?: string }[];
            }[];
          };
        };
      };
    };
    const c = dep.spec.template.spec.containers[0]!;
    expect(dep.spec.replicas).toBe(3);
    expect(c.image).toBe('ghcr.io/bionicaisolutions/email-relay:9.9.9');
    expect(c.env.find((e) => e.name === 'EMAIL_RELAY_IMAGE')?.value).toBe(c.image);
    expect(c.args).toEqual(['operator', '--http', '0.0.0.0:8080', '--namespace', 'team-a,team-b']);
    expect(c.resources.limits.memory).toBe('1Gi');
  });

  it("the optional monitoring objects are deploy/monitoring's, in the release namespace, off by default", async () => {
    const off = await template('--namespace', 'm');
    expect(off.filter((o) => o.apiVersion.startsWith('monitoring.coreos.com')).length).toBe(0);
    const on = await template(
      '--namespace',
      'm',
      ...['podMonitor', 'serviceMonitor', 'prometheusRule', 'dashboard'].flatMap((m) => [
        '--set',
        `monitoring.${m}.enabled=true`,
      ]),
      '--set',
      'monitoring.labels.release=prometheus',
    );
    const get = (kind: string, name: string) =>
      on.find((o) => o.kind === kind && o.metadata.name === name) as Obj & Record<string, unknown>;
    const rule = get('PrometheusRule', 'email-relay');
    expect(rule.metadata.namespace).toBe('m');
    expect(rule['spec']).toEqual(prometheusRule()['spec']);
    expect((rule.metadata as unknown as { labels: Record<string, string> }).labels['release']).toBe(
      'prometheus',
    );
    for (const pm of podMonitors() as Obj[])
      expect(get('PodMonitor', pm.metadata.name)['spec']).toEqual(pm['spec']);
    expect(get('ServiceMonitor', 'email-relay-operator')).toBeDefined();
    const cm = get('ConfigMap', 'email-relay-dashboard') as unknown as {
      data: Record<string, string>;
      metadata: { labels: Record<string, string> };
    };
    expect(cm.metadata.labels['grafana_dashboard']).toBe('1');
    expect(JSON.parse(cm.data['email-relay.json']!)).toEqual(
      JSON.parse((dashboardConfigMap() as { data: Record<string, string> }).data['email-relay.json']!),
    );
  });
});
