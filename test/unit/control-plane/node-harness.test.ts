import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { goBinaryName } from '../../control-plane/build.ts';
import { parseGoMod, renderGoMod } from '../../control-plane/gomod.ts';
import { cniConflist, corefile, nodePaths } from '../../control-plane/node-config.ts';
import { repoGoDir } from '../../control-plane/paths.ts';
import { GO_MODULES, KUBE_ROUTER_MODULE } from '../../control-plane/versions.ts';

describe('test harness: Go modules of the control plane and node', () => {
  it('names binaries as `go build -o dir/` does (last element, major-version suffix skipped)', () => {
    expect(goBinaryName('k8s.io/kubernetes/cmd/kubelet')).toBe('kubelet');
    expect(goBinaryName('go.etcd.io/etcd/server/v3')).toBe('server');
    expect(goBinaryName('email-relay.test/control-plane/coredns')).toBe('coredns');
  });

  it('every checked-in go.mod requires the upstream release versions.ts pins', () => {
    for (const mod of GO_MODULES) {
      const gomod = parseGoMod(readFileSync(join(repoGoDir(), mod.dir, 'go.mod'), 'utf8'));
      expect(gomod.require.get(mod.upstream), mod.dir).toBe(mod.version);
      for (const b of mod.binaries) expect(goBinaryName(b.pkg) === b.name || b.name === 'etcd').toBe(true);
    }
  });

  it("copies an untidy upstream's require list verbatim instead of letting tidy move it", () => {
    const upstream = parseGoMod('module x\n\ngo 1.21\n\nrequire (\n\tgoogle.golang.org/grpc v1.62.0\n)\n');
    const out = renderGoMod(KUBE_ROUTER_MODULE, upstream);
    expect(out).toContain(`require ${KUBE_ROUTER_MODULE.upstream} ${KUBE_ROUTER_MODULE.version}`);
    expect(out).toContain('\tgoogle.golang.org/grpc v1.62.0 // indirect');
  });
});

describe('test harness: node config', () => {
  it('pods keep their own source address (no masquerade) and DNS has no way out', () => {
    const cni = JSON.parse(cniConflist(nodePaths('/s'))) as { plugins: { ipMasq?: boolean }[] };
    expect(cni.plugins[0]?.ipMasq).toBe(false);
    expect(corefile('/k')).not.toMatch(/\bforward\b/);
  });
});
