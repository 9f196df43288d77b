#!/usr/bin/env node
import { parseArgs } from 'node:util';
import { ConfigError, loadConfig } from './config/load.ts';
import { createLogger } from './lib/logger.ts';

const USAGE = `usage:
  email-relay relay [--config FILE] [--listen HOST:PORT] [--http HOST:PORT]
                    [--upstream URL] [--spool DIR] [--allow CIDR]... [--hostname FQDN]
                    [--drain-only]
  email-relay operator [--kubeconfig FILE] [--namespace NS]... [--http HOST:PORT]
  email-relay queue list|show ID|flush|delete ID|retry ID|drain  [--spool DIR] [--config FILE] [--json]
`;

/** Exit codes: 0 ok, 1 runtime failure, 2 bad usage or configuration. */
class UsageError extends Error {}

async function relay(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      config: { type: 'string', short: 'c' },
      listen: { type: 'string' },
      http: { type: 'string' },
      upstream: { type: 'string' },
      spool: { type: 'string' },
      allow: { type: 'string', multiple: true },
      hostname: { type: 'string' },
      'drain-only': { type: 'boolean' },
    },
    strict: true,
    allowPositionals: false,
  });
  const { 'drain-only': drainOnly, ...flags } = values;
  const config = await loadConfig({
    ...(values.config ? { file: values.config } : {}),
    flags,
  });
  // Synchronous: two lines per message, each otherwise a thread-pool round trip (logger.ts).
  const logger = createLogger(config.logLevel, { addresses: config.logAddresses, sync: true });
  if (drainOnly) {
    const { runDrainOnly } = await import('./relay/drain-only.ts');
    const report = await runDrainOnly(config, logger);
    process.exit(report.left ? 1 : 0);
  }
  const { startRelay } = await import('./relay/relay.ts');
  const relay = await startRelay(config, logger);
  let signals = 0;
  const onSignal = (sig: string) => {
    if (++signals > 1) {
      logger.warn({ signal: sig }, 'second signal: exiting now; queued mail stays in the spool');
      process.exit(1);
    }
    relay.stop(sig).then(
      () => process.exit(0),
      (err: unknown) => {
        logger.error({ err }, 'unclean shutdown');
        process.exit(1);
      },
    );
  };
  // `queue drain` stops the relay once its queue is empty.
  void relay.done.then(() => process.exit(0));
  process.on('SIGTERM', () => onSignal('SIGTERM'));
  process.on('SIGINT', () => onSignal('SIGINT'));
}

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case 'relay':
      await relay(rest);
      return -1; // keep running
    case 'queue': {
      const { queueCommand } = await import('./relay/queue-cli.ts');
      return queueCommand(rest);
    }
    case 'operator': {
      const { operatorCommand } = await import('./operator/cli.ts');
      await operatorCommand(rest);
      return -1;
    }
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(USAGE);
      return 0;
    default:
      throw new UsageError(cmd ? `unknown command "${cmd}"` : 'missing command');
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exitCode = code;
  },
  (err: unknown) => {
    if (err instanceof ConfigError) {
      process.stderr.write(`email-relay: ${err.message}\n`);
      process.exit(2);
    }
    const e = err as Error & { code?: string };
    if (err instanceof UsageError || e.code?.startsWith('ERR_PARSE_ARGS')) {
      process.stderr.write(`email-relay: ${e.message}\n${USAGE}`);
      process.exit(2);
    }
    process.stderr.write(`email-relay: ${e.stack ?? e.message}\n`);
    process.exit(1);
  },
);
