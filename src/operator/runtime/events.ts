import { randomBytes } from 'node:crypto';
import type { KubeClient } from '../../lib/kube/client.ts';
import type { Logger } from '../../lib/logger.ts';
import type { KubeObject } from '../api/meta.ts';
import { resourcePath, resourceType } from './resources.ts';

/**
 * core/v1 Events about our objects, which is what `kubectl describe` lists. Repeats of the same
 * (object, type, reason, message) within ten minutes bump a count instead of adding an event, as
 * client-go's recorder aggregates. Recording never fails a reconcile: errors are only logged.
 */

export type EventType = 'Normal' | 'Warning';

export interface EventRecorder {
  event(obj: KubeObject, type: EventType, reason: string, message: string): void;
}

interface Seen {
  name: string;
  namespace: string;
  count: number;
  first: string;
  last: number;
}

const AGGREGATE_MS = 10 * 60_000;

export class KubeEventRecorder implements EventRecorder {
  private readonly seen = new Map<string, Seen>();
  private chain: Promise<void> = Promise.resolve();

  constructor(
    private readonly client: KubeClient,
    private readonly component: string,
    private readonly logger: Logger,
  ) {}

  event(obj: KubeObject, type: EventType, reason: string, message: string): void {
    this.chain = this.chain.then(() =>
      this.record(obj, type, reason, message).catch((err: Error) =>
        this.logger.warn({ err: err.message, reason }, 'could not record event'),
      ),
    );
  }

  /** Resolves when the events recorded so far are written (tests, shutdown). */
  flush(): Promise<void> {
    return this.chain;
  }

  private async record(obj: KubeObject, type: EventType, reason: string, message: string): Promise<void> {
    const namespace = obj.metadata.namespace ?? 'default';
    const key = [obj.metadata.uid, type, reason, message].join('\u0000');
    const now = new Date();
    const ts = now.toISOString().replace(/\.\d{3}Z$/, 'Z');
    const t = resourceType('Event');
    const prev = this.seen.get(key);
    if (prev && now.getTime() - prev.last < AGGREGATE_MS) {
      prev.count++;
      prev.last = now.getTime();
      await this.client.request('PATCH', resourcePath(t, prev.namespace, prev.name), {
        body: { count: prev.count, lastTimestamp: ts },
        contentType: 'application/merge-patch+json',
      });
      return;
    }
    const name = `${obj.metadata.name}.${now.getTime().toString(16)}${randomBytes(2).toString('hex')}`;
    await this.client.request('POST', resourcePath(t, namespace), {
      body: {
        apiVersion: 'v1',
        kind: 'Event',
        metadata: { name, namespace },
        involvedObject: {
          apiVersion: obj.apiVersion,
          kind: obj.kind,
          name: obj.metadata.name,
          namespace,
          uid: obj.metadata.uid,
          resourceVersion: obj.metadata.resourceVersion,
        },
        type,
        reason,
        message: message.slice(0, 1024),
        source: { component: this.component },
        reportingComponent: this.component,
        reportingInstance: process.env['HOSTNAME'] ?? this.component,
        firstTimestamp: ts,
        lastTimestamp: ts,
        count: 1,
      },
    });
    if (this.seen.size > 5000) this.seen.clear();
    this.seen.set(key, { name, namespace, count: 1, first: ts, last: now.getTime() });
  }
}
