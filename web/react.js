// React bindings of the rowcast browser client, on useSyncExternalStore.
// React is a peer: this module imports 'react' (a bundler resolves it; a
// build-free page maps it with an import map). Types are in react.d.ts.
//
//   const status = useRowcastStatus(rc)                // re-renders on change
//   useRowcastEvent(rc, 'escrow:updated', (data) => toast(data.entityId))
//   const last = useRowcastEvent(rc, 'ai:task:progress') // the latest data

import { useCallback, useEffect, useRef, useSyncExternalStore } from 'react'

/** useRowcastStatus returns rc.status and re-renders when it changes. */
export function useRowcastStatus(rc) {
  const subscribe = useCallback((notify) => rc.on('status', notify), [rc])
  return useSyncExternalStore(subscribe, () => rc.status, () => rc.status)
}

// lastEvents keeps, per client and event name, the latest data and who
// renders it, so every component reading one name shares one listener.
const lastEvents = new WeakMap()

function eventStore(rc, name) {
  let byName = lastEvents.get(rc)
  if (!byName) lastEvents.set(rc, (byName = new Map()))
  let store = byName.get(name)
  if (!store) {
    store = { data: undefined, notify: new Set(), off: null }
    byName.set(name, store)
  }
  return store
}

/**
 * useRowcastEvent calls fn(data, meta) for every event of that name while the
 * component is mounted (the latest fn, without re-subscribing when it
 * changes), and returns the latest event's data (undefined before one).
 */
export function useRowcastEvent(rc, name, fn) {
  const fnRef = useRef(fn)
  useEffect(() => {
    fnRef.current = fn
  })
  useEffect(() => rc.on(name, (data, meta) => fnRef.current?.(data, meta)), [rc, name])
  const subscribe = useCallback(
    (notify) => {
      const store = eventStore(rc, name)
      store.notify.add(notify)
      if (!store.off) {
        store.off = rc.on(name, (data) => {
          store.data = data
          for (const n of store.notify) n()
        })
      }
      return () => {
        store.notify.delete(notify)
        if (store.notify.size === 0) {
          store.off()
          store.off = null
        }
      }
    },
    [rc, name],
  )
  const get = () => lastEvents.get(rc)?.get(name)?.data
  return useSyncExternalStore(subscribe, get, get)
}
