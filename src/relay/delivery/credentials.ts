import { readFile } from 'node:fs/promises';
import type { RelayConfig } from '../../config/schema.ts';

/**
 * Upstream credentials: never in the ConfigMap, only in mounted files or the environment.
 * Read again for every new connection, so a rotated Kubernetes Secret (the kubelet swaps the
 * mounted file) takes effect without a restart.
 */

export type AuthMethod = 'PLAIN' | 'LOGIN' | 'XOAUTH2';

export interface UpstreamCredentials {
  method: AuthMethod;
  user: string;
  /** The password, or the OAuth2 access token for XOAUTH2. */
  secret: string;
}

export const USER_ENV = 'EMAIL_RELAY_UPSTREAM_USER';
export const PASSWORD_ENV = 'EMAIL_RELAY_UPSTREAM_PASSWORD';

type AuthConfig = RelayConfig['upstream']['auth'];

/** Whether connections authenticate at all: an `upstream.auth` section, or both variables set. */
export function authConfigured(auth: AuthConfig, env: NodeJS.ProcessEnv = process.env): boolean {
  return auth !== undefined || Boolean(env[USER_ENV] && env[PASSWORD_ENV]);
}

// Secrets written with `echo` or `kubectl create secret --from-file` end in a newline that is not
// part of the value.
async function readSecretFile(path: string, what: string): Promise<string> {
  try {
    return (await readFile(path, 'utf8')).replace(/\r?\n$/, '');
  } catch (err) {
    throw new Error(`upstream.auth: cannot read ${what} ${path}: ${(err as Error).message}`);
  }
}

export async function readCredentials(
  auth: AuthConfig,
  env: NodeJS.ProcessEnv = process.env,
): Promise<UpstreamCredentials | undefined> {
  if (!authConfigured(auth, env)) return undefined;
  const method = auth?.method ?? 'PLAIN';
  let user = auth?.user;
  if (user === undefined && auth?.userFile) user = await readSecretFile(auth.userFile, 'userFile');
  if (user === undefined) user = env[USER_ENV];
  if (!user) throw new Error(`upstream.auth: no user (set upstream.auth.user, userFile or ${USER_ENV})`);
  const secret = auth?.passwordFile
    ? await readSecretFile(auth.passwordFile, 'passwordFile')
    : env[PASSWORD_ENV];
  if (!secret) {
    throw new Error(
      `upstream.auth: no password or token (set upstream.auth.passwordFile or ${PASSWORD_ENV})`,
    );
  }
  return { method, user, secret };
}
