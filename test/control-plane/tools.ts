import { spawnSync } from 'node:child_process';

/** A host tool the control plane needs is not installed (`npm test` installs them; by hand, see the hint). */
export class MissingToolError extends Error {
  constructor(
    readonly tool: string,
    hint: string,
  ) {
    super(`control plane: \`${tool}\` is required but was not found on PATH. ${hint}`);
    this.name = 'MissingToolError';
  }
}

/** Runs `<tool> <args>` to prove the tool exists; returns its first output line (a version string). */
export function requireTool(tool: string, versionArgs: string[], hint: string): string {
  const r = spawnSync(tool, versionArgs, { encoding: 'utf8' });
  if (r.error || r.status !== 0) throw new MissingToolError(tool, hint);
  return `${r.stdout}${r.stderr}`.trim().split('\n')[0] ?? '';
}

export const GO_HINT =
  'Install Go >= 1.26 (https://go.dev/dl/) to build etcd/kube-apiserver, or set KUBEBUILDER_ASSETS ' +
  'to a directory holding prebuilt etcd, kube-apiserver and kubectl.';

export const OPENSSL_HINT = 'Install OpenSSL (Debian: apt-get install openssl); it generates the test PKI.';
