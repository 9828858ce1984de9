// Types of react.js, the React bindings of the rowcast browser client.
import type { Client, Status, EntityEvent, EventMeta } from './client'

/** The client's status; the component re-renders when it changes. */
export declare function useRowcastStatus(rc: Client): Status

/**
 * Calls fn for every event of that name while mounted (the latest fn, without
 * re-subscribing when it changes) and returns the latest event's data.
 */
export declare function useRowcastEvent<T = EntityEvent>(
  rc: Client,
  name: string,
  fn?: (data: T, meta: EventMeta) => void,
): T | undefined
