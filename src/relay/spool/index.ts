/**
 * The durable queue. `openSpool` for the relay; the offline functions for `email-relay queue`.
 * On-disk format: see format.ts; commit protocol: see journal.ts and spool.ts.
 */
export { FORMAT_VERSION, SpoolFormatError } from './format.ts';
export { idTime, isQueueId } from './ids.ts';
export { type LockInfo, SpoolLockedError } from './lock.ts';
export {
  deleteMessage,
  flushQueue,
  listMessages,
  listQuarantined,
  listQueue,
  type OfflineMessage,
  retryMessage,
  type SpoolOwner,
  showMessage,
  spoolOwner,
} from './offline.ts';
export {
  isSpoolFull,
  type JournalOptions,
  type OpenSpoolOptions,
  openSpool,
  type RelaySpool,
  SpoolFullError,
} from './spool.ts';
export type * from './types.ts';
