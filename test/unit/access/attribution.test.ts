import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { fromKubeconfig, KubeConfigError, loadKubeConnection } from '../../../src/lib/kube/connection.ts';
import { type PodFields, PodIndex, podAddresses, slimPod } from '../../../src/relay/access/attribution.ts';

const pod = (uid: string, name: string, ips: string[], extra: Partial<PodFields> = {}): PodFields => ({
  metadata: { uid, name, namespace: 'billing' },
  status: { phase: 'Running', podIPs: ips.map((ip) => ({ ip })) },
  ...extra,
});

describe('pod addresses', () => {
  it('takes podIPs, falls back to podIP, and ignores hostNetwork and finished pods', () => {
    expect(podAddresses(pod('1', 'a', ['10.0.0.1', 'fd00::1']))).toEqual(['10.0.0.1', 'fd00::1']);
    expect(podAddresses({ status: { phase: 'Running', podIP: '10.0.0.2' } })).toEqual(['10.0.0.2']);
    expect(podAddresses(pod('1', 'a', ['10.0.0.1'], { spec: { hostNetwork: true } }))).toEqual([]);
    expect(podAddresses({ status: { phase: 'Succeeded', podIP: '10.0.0.3' } })).toEqual([]);
  });
});

describe('PodIndex', () => {
  it('moves a pod to its new address and forgets the old one', () => {
    const idx = new PodIndex();
    idx.upsert(pod('u1', 'web-1', ['10.0.0.1']));
    idx.upsert(pod('u1', 'web-1', ['10.0.0.9']));
    expect(idx.get('10.0.0.1')).toBeUndefined();
    expect(idx.get('10.0.0.9')).toEqual({ namespace: 'billing', pod: 'web-1' });
  });

  it('does not let a deleted pod take away an address a newer pod now holds', () => {
    const idx = new PodIndex();
    idx.upsert(pod('old', 'job-1', ['10.0.0.5']));
    idx.upsert(pod('new', 'web-2', ['10.0.0.5']));
    idx.remove(pod('old', 'job-1', ['10.0.0.5']));
    expect(idx.get('10.0.0.5')).toEqual({ namespace: 'billing', pod: 'web-2' });
    idx.remove(pod('new', 'web-2', []));
    expect(idx.get('10.0.0.5')).toBeUndefined();
  });

  it('caches only what attribution reads of a pod', () => {
    const full = {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'web-1', namespace: 'billing', uid: 'u1', resourceVersion: '7', labels: { a: 'b' } },
      spec: { containers: [{ name: 'app', image: 'x' }], hostNetwork: false },
      status: { phase: 'Running', podIP: '10.0.0.1', podIPs: [{ ip: '10.0.0.1' }], conditions: [] },
    };
    expect(slimPod(full)).toEqual({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'web-1', namespace: 'billing', uid: 'u1', resourceVersion: '7' },
      status: { phase: 'Running', podIP: '10.0.0.1', podIPs: [{ ip: '10.0.0.1' }] },
    });
    expect(slimPod({ ...full, spec: { ...full.spec, hostNetwork: true } }).spec).toEqual({
      hostNetwork: true,
    });
  });
});

describe('kubeconfig', () => {
  const doc = (user: Record<string, unknown>, cluster: Record<string, unknown> = {}) => ({
    'current-context': 'c',
    contexts: [{ name: 'c', context: { cluster: 'k', user: 'u' } }],
    clusters: [{ name: 'k', cluster: { server: 'https://10.0.0.1:6443/', ...cluster } }],
    users: [{ name: 'u', user }],
  });

  it('reads embedded certificates and a token', () => {
    const c = fromKubeconfig(
      doc(
        { 'client-certificate-data': Buffer.from('CERT').toString('base64'), token: 'T' },
        { 'certificate-authority-data': Buffer.from('CA').toString('base64') },
      ),
      '/',
    );
    expect(c.server).toBe('https://10.0.0.1:6443');
    expect(c.ca?.toString()).toBe('CA');
    expect(c.cert?.toString()).toBe('CERT');
    expect(c.token?.()).toBe('T');
  });

  it('resolves file paths against the kubeconfig folder and re-reads token files', () => {
    const dir = mkdtempSync(join(tmpdir(), 'kc-'));
    writeFileSync(join(dir, 'ca.crt'), 'CAFILE');
    writeFileSync(join(dir, 'token'), 'one\n');
    const c = fromKubeconfig(doc({ tokenFile: 'token' }, { 'certificate-authority': 'ca.crt' }), dir);
    expect(c.ca?.toString()).toBe('CAFILE');
    expect(c.token?.()).toBe('one');
    writeFileSync(join(dir, 'token'), 'two\n');
    expect(c.token?.()).toBe('two');
  });

  it('names what is missing or unsupported', () => {
    expect(() => fromKubeconfig({}, '/')).toThrow(/no current-context/);
    expect(() => fromKubeconfig({ ...doc({}), 'current-context': 'x' }, '/')).toThrow(
      /context "x" not found/,
    );
    expect(() => fromKubeconfig(doc({ exec: { command: 'aws' } }), '/')).toThrow(KubeConfigError);
  });

  it('uses the service account in a pod, with a rotating token', () => {
    const dir = mkdtempSync(join(tmpdir(), 'sa-'));
    writeFileSync(join(dir, 'token'), 'sa-token');
    writeFileSync(join(dir, 'ca.crt'), 'SACA');
    const c = loadKubeConnection(
      undefined,
      { KUBERNETES_SERVICE_HOST: 'fd00::1', KUBERNETES_SERVICE_PORT: '443', HOME: dir },
      dir,
    );
    expect(c.server).toBe('https://[fd00::1]:443');
    expect(c.token?.()).toBe('sa-token');
    expect(c.ca?.toString()).toBe('SACA');
  });
});
