// The relay image's runtime contract, written once: the OCI builder (scripts/image/images.ts)
// writes it into the image config and the rootfs, and test/unit/image/dockerfile-contract.test.ts
// checks that the Dockerfile's final stage says the same, so neither side can drift unseen.

/** Non-root user of distroless's `:nonroot` images; pods run with runAsUser 65532 too. */
export const RUNTIME_UID = 65532;

export const RELAY_CONTRACT = {
  user: `${RUNTIME_UID}:${RUNTIME_UID}`,
  workdir: '/app',
  /** Env the Dockerfile sets itself (the base image adds PATH; we set PATH in `imageEnv`). */
  env: { NODE_ENV: 'production' } as Record<string, string>,
  /** Where distroless puts node; the V8 flags are measured in bench/README.md. */
  entrypoint: [
    '/nodejs/bin/node',
    '--max-semi-space-size=8',
    '--heap-growing-percent=50',
    '/app/dist/cli.js',
  ],
  cmd: ['--help'],
  /** 25 SMTP, 9090 relay HTTP, 8080 operator HTTP. */
  exposedPorts: ['25/tcp', '9090/tcp', '8080/tcp'],
  /**
   * What lands under /app, as the Dockerfile's COPY lines have it: `from` is the path in the
   * build (checkout or build stage), `to` the absolute path in the image.
   */
  app: [
    { from: 'package.json', to: '/app/package.json' },
    { from: 'node_modules', to: '/app/node_modules' },
    { from: 'dist', to: '/app/dist' },
    { from: 'crds', to: '/app/crds' },
  ],
} as const;

/** PATH as distroless sets it; nothing in the image relies on it but `kubectl exec` users might. */
export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
