// Types of client.js, the rowcast browser client (PROTOCOL.md, protocol 1).

/** The connection's state; a badge renders it. */
export type Status = 'connecting' | 'connected' | 'reconnecting' | 'offline'

/** The minimal Storage the client keeps its position in (sessionStorage). */
export interface PositionStorage {
  getItem(key: string): string | null
  setItem(key: string, value: string): void
}

export interface ConnectOptions {
  /** The relay's WebSocket endpoint: 'wss://relay.example/ws', or '/ws' on the page's host. */
  url: string
  /**
   * The JWT, or a function returning a promise of one. A function is called
   * before every attempt and before the token expires (the fresh token is sent
   * in-band with an `auth` message, without reconnecting).
   */
  token?: string | (() => string | Promise<string>)
  /** A WebSocket constructor (default: globalThis.WebSocket). */
  WebSocket?: new (url: string) => WebSocket
  /** Where the last processed position is kept so a reload resumes (default: sessionStorage; null: nowhere). */
  storage?: PositionStorage | null
  /** The storage key (default: `rowcast:position:<url>`). */
  storageKey?: string
  /**
   * Called for every failed attempt, lost connection and refusal, with the
   * number of failed attempts since the last stable connection: plug error
   * reporting (Sentry breadcrumbs) in here.
   */
  onError?: (err: RowcastError, info: { attempt: number; status: Status }) => void
  /** First retry window in ms (default 1000); each failed attempt doubles it. */
  minDelayMs?: number
  /** Cap of the retry window in ms (default 30000). */
  maxDelayMs?: number
  /** First retry window after the relay drained (close 1001), in ms (default 5000). */
  drainDelayMs?: number
  /** How long a connection must stay up before the attempt count resets, in ms (default 10000). */
  stableMs?: number
  /** An unanswered ping this old closes the connection, in ms (default 10000). */
  pongTimeoutMs?: number
  /** An attempt that got no welcome this long fails, in ms (default 15000). */
  welcomeTimeoutMs?: number
  /** Refresh a function token this long before it expires, in ms (default 60000). */
  refreshBeforeMs?: number
}

/** What an event listener gets beside the event's data. */
export interface EventMeta {
  /** The event's position; the client has stored it as its own. */
  position: string
  /** The event name, `<entity>:<action>` or `ai:task:<what>`. */
  event: string
  /** True for an event replayed after a reconnect, before `resumed`. */
  replayed: boolean
}

/** The data of an entity event (PROTOCOL.md section 3). */
export interface EntityEvent {
  entityType: string
  entityId: string
  action: 'created' | 'updated' | 'deleted'
  teamId?: string
  userId?: string
  requestId?: string
  changes?: Record<string, unknown>
  committedAt: string
  [key: string]: unknown
}

export interface Welcome {
  type: 'welcome'
  protocol: number
  sessionId: string
  userId: string
  teamIds: string[]
  position: string
  heartbeatMs: number
  expiresAt: string | null
}

export interface Resync {
  type: 'resync'
  /** 'history_expired' (refetch everything) or 'truncate' (refetch entityType). */
  reason: string
  entityType?: string
}

export interface Resumed {
  type: 'resumed'
  position: string
  replayed: number
}

export declare class RowcastError extends Error {
  /**
   * 'unauthorized', 'forbidden', 'closed', 'timeout', 'connect', 'token', or
   * an error frame's code ('rate_limited', 'token_expired', 'bad_request', …).
   */
  code: string
  /** The WebSocket close code, when a close caused it. */
  closeCode?: number
  /** The relay's error frame, when one caused it. */
  frame?: { type: 'error'; code: string; message?: string; teamId?: string }
  /** Failed attempts since the last stable connection. */
  attempt: number
}

export interface Client {
  readonly status: Status
  /** The last processed position, or null before the first welcome. */
  readonly position: string | null
  /** Failed attempts since the last stable connection. */
  readonly attempt: number
  /** The wait before the scheduled attempt, in ms. */
  readonly nextDelay: number
  readonly sessionId: string | null
  readonly userId: string | null
  /**
   * The teams the session follows: the welcome's, less each team a
   * `forbidden` error frame removed (auth.membership).
   */
  readonly teamIds: string[]

  on(name: 'status', fn: (status: Status) => void): () => void
  on(name: 'welcome', fn: (welcome: Welcome) => void): () => void
  on(name: 'resync', fn: (resync: Resync) => void): () => void
  on(name: 'resumed', fn: (resumed: Resumed) => void): () => void
  on(name: 'error', fn: (err: RowcastError) => void): () => void
  on(name: string, fn: (data: EntityEvent, meta: EventMeta) => void): () => void
  onAny(fn: (name: string, data: EntityEvent, meta: EventMeta) => void): () => void
  /** The number of listeners of one name, or of all. */
  listenerCount(name?: string): number
  /** Narrow to these entity types now and after every reconnect; null: all. */
  subscribe(entities: string[] | null): void
  /** Skip a pending backoff wait. */
  reconnectNow(): void
  /** End the session for good; status becomes 'offline'. */
  close(): void
}

export declare function connect(options: ConnectOptions): Client

/** The wait before reconnect attempt n (from 0): a random time in [0, min(max, base·2ⁿ)). */
export declare function backoffDelay(attempt: number, baseMs: number, maxMs: number, random?: () => number): number
