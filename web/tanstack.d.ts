// Types of tanstack.js: rowcast events kept in a TanStack Query cache.
import type { Client } from './client'

/** How one entity's queries are found. */
export interface EntityOptions {
  /** The list key prefix: ['escrows'] matches ['escrows'], ['escrows', {status}] and detail ['escrows', '42']. */
  list: readonly unknown[]
  /** The rows' id field (default 'id'); compared with the event's entityId as a string. */
  idField?: string
  /** The field that marks an optimistic row with its request id (default '_requestId'). */
  requestIdField?: string
}

export interface SyncOptions {
  /**
   * TanStack's onlineManager: when given, "online" means the relay is
   * connected, so mutations made while it is unreachable pause and resume,
   * in order within a mutation scope, when it returns. Give queries
   * networkMode 'always' if they should load over REST meanwhile.
   */
  onlineManager?: { setEventListener(setup: (setOnline: (online: boolean) => void) => () => void): void }
}

export type OptimisticChange =
  | { action: 'created'; row: Record<string, unknown> }
  | { action: 'updated'; id: string | number; changes: Record<string, unknown> }
  | { action: 'deleted'; id: string | number }

export interface Optimistic {
  /** The row's id; `tmp:<requestId>` for a created row without one. */
  id: string
  /** Resolves with the event whose requestId is this one (the echo). */
  echo: Promise<Record<string, unknown>>
  /** Puts the write's answer (the stored row) in the optimistic row's place, in case the echo is late. */
  confirm(row: Record<string, unknown>): void
  /** Undoes exactly this change, keeping what arrived meanwhile. */
  rollback(): void
}

export interface Sync {
  /** Applies a change to the cache at once; send requestId as X-Request-Id with the write. */
  optimistic(entity: string, requestId: string, change: OptimisticChange): Optimistic
  /** Removes every listener. */
  stop(): void
}

export declare function syncQueries(
  rc: Client,
  queryClient: unknown,
  entities: Record<string, readonly unknown[] | EntityOptions>,
  options?: SyncOptions,
): Sync

/** A fresh id for an optimistic write's X-Request-Id header. */
export declare function newRequestId(): string
