import { defineConfig } from 'vitest/config';

// Five projects: pure unit tests, relay tests against real SMTP peers on loopback (the delivery
// suite twice, once with quiet sessions kept on the main thread), Kubernetes tests
// against a real etcd + kube-apiserver (test/control-plane), and end-to-end tests on a real
// single-node cluster with the product's image running as pods (`up --node`, root only).
export default defineConfig({
  test: {
    projects: [
      { test: { name: 'unit', include: ['test/unit/**/*.test.ts'] } },
      {
        test: {
          name: 'relay',
          include: ['test/relay/**/*.test.ts'],
          testTimeout: 60_000,
          hookTimeout: 60_000,
        },
      },
      {
        // The delivery suite again with a quiet relay's sessions on the main thread, as on a
        // budget of one CPU: with two or more (CI) they live in the delivery thread
        // (src/relay/delivery/placement.ts), so both paths run whatever the machine.
        test: {
          name: 'relay-local',
          include: ['test/relay/delivery/**/*.test.ts'],
          env: { EMAIL_RELAY_DELIVERY_QUIET_LOCAL: '1' },
          testTimeout: 60_000,
          hookTimeout: 60_000,
        },
      },
      {
        test: {
          name: 'kube',
          include: ['test/kube/**/*.test.ts'],
          globalSetup: ['test/control-plane/global-setup.ts'],
          testTimeout: 120_000,
          hookTimeout: 120_000,
          fileParallelism: false,
        },
      },
      {
        test: {
          name: 'node',
          include: ['test/node/**/*.test.ts'],
          globalSetup: ['test/node/global-setup.ts'],
          testTimeout: 600_000,
          // A cold machine builds the images in the global setup.
          hookTimeout: 900_000,
          fileParallelism: false,
        },
      },
    ],
  },
});
