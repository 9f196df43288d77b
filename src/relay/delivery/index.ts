import { Agent } from './agent.ts';
import type { CreateDeliveryAgent } from './types.ts';

export type { DeliveryAgent, DeliveryDeps, RouteHealth, RouteState } from './types.ts';

/** Delivery: scheduler, upstream SMTP client, retries, bounces (DSN), outbox mode. See agent.ts. */
export const createDeliveryAgent: CreateDeliveryAgent = (deps) => new Agent(deps);
