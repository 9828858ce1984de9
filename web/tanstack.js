// rowcast ↔ TanStack Query: keeps a QueryClient's cached lists and details
// in step with a rowcast client's events, without refetching. Works with
// @tanstack/query-core 5 and so with React Query 5; imports nothing (the app
// passes its own QueryClient and onlineManager). Types are in tanstack.d.ts.
//
//   import { syncQueries, newRequestId } from '/tanstack.js'
//   const sync = syncQueries(rc, queryClient, { escrow: ['escrows'], lead: ['leads'] }, { onlineManager })
//
// For an entity mapped to the key ['escrows']:
//
//   list queries    every query whose key starts with ['escrows'] and whose
//                   data is an array of rows: `created` prepends the row,
//                   `updated` merges `changes` into the row with that id,
//                   `deleted` removes it;
//   detail queries  ['escrows', '<id>'] whose data is one row: `updated`
//                   merges, `deleted` removes the query;
//   resync          'history_expired' invalidates every mapped query,
//                   'truncate' the truncated entity's.
//
// A list fetch in flight when an event arrives would overwrite the event with
// its (older) result: such events are kept and applied again to the result.
// Applying an event is idempotent (a created row already there is replaced,
// a merge of the same values changes nothing), so applying one twice is safe.

/**
 * syncQueries starts applying rc's events to queryClient's cache and returns
 * the controller; stop() undoes every registration.
 * @param {import('./client').Client} rc
 * @param {*} queryClient a QueryClient of @tanstack/query-core 5
 * @param {Record<string, unknown[] | EntityOptions>} entities
 * @param {{ onlineManager?: *, requestIdField?: string }} [options]
 */
export function syncQueries(rc, queryClient, entities, options = {}) {
  const specs = new Map()
  for (const [entity, spec] of Object.entries(entities ?? {})) {
    specs.set(entity, normalize(entity, spec))
  }
  if (specs.size === 0) throw new TypeError('rowcast: syncQueries needs at least one entity → query key')
  const cache = queryClient.getQueryCache()
  const held = new Map() // queryHash -> events applied while its fetch was in flight
  const pending = new Map() // requestId -> { resolve, entity, tempId }
  const offs = []

  // apply runs one event against every query of its entity.
  function apply(spec, data) {
    const id = String(data.entityId)
    const echo = data.requestId != null ? pending.get(data.requestId) : undefined
    for (const query of cache.findAll({ queryKey: spec.list })) {
      const key = query.queryKey
      const cur = query.state.data
      // A fetch in flight (the first load too) would overwrite this event
      // with its result: keep the event for that result.
      if (query.state.fetchStatus === 'fetching' && (cur === undefined || Array.isArray(cur))) {
        let list = held.get(query.queryHash)
        if (!list) held.set(query.queryHash, (list = []))
        list.push({ spec, data })
      }
      if (Array.isArray(cur)) {
        queryClient.setQueryData(key, (rows) => applyToList(spec, rows, data, id, echo))
      } else if (cur && typeof cur === 'object' && isDetailKey(spec, key, id)) {
        if (data.action === 'deleted') queryClient.removeQueries({ queryKey: key, exact: true })
        else queryClient.setQueryData(key, (row) => applyToRow(spec, row, data))
      }
    }
    if (echo) {
      pending.delete(data.requestId)
      echo.resolve(data)
    }
  }

  offs.push(
    rc.onAny((name, data) => {
      if (!data || typeof data !== 'object') return
      const spec = specs.get(data.entityType)
      if (!spec || !data.action || data.entityId == null) return
      apply(spec, data)
    }),
  )

  offs.push(
    rc.on('resync', (r) => {
      for (const spec of specs.values()) {
        if (r.reason === 'truncate' && r.entityType && r.entityType !== spec.entity) continue
        queryClient.invalidateQueries({ queryKey: spec.list })
      }
    }),
  )

  // A fetch that finished replaced the list with its result: apply again
  // what arrived while it was in flight. setQueryData's own updates carry
  // manual: true and are not fetch results.
  offs.push(
    cache.subscribe((e) => {
      if (e.type !== 'updated' || !held.has(e.query.queryHash)) return
      const t = e.action?.type
      if (t === 'fetch') {
        // A new fetch reads after the held events committed: its result
        // has them, and a later result must not get them again.
        held.delete(e.query.queryHash)
      } else if (t === 'success' && !e.action.manual) {
        const events = held.get(e.query.queryHash)
        held.delete(e.query.queryHash)
        queryClient.setQueryData(e.query.queryKey, (rows) => {
          let out = rows
          for (const { spec, data } of events) {
            if (Array.isArray(out)) out = applyToList(spec, out, data, String(data.entityId), undefined)
          }
          return out
        })
      } else if (e.query.state.fetchStatus !== 'fetching') {
        // Failed or cancelled: no result will overwrite the events.
        held.delete(e.query.queryHash)
      }
    }),
  )

  // TanStack pauses mutations while offline and resumes them, in order
  // within a mutation scope, when online again: "online" here means the relay
  // is connected, so writes made while it is unreachable wait for it.
  const om = options.onlineManager
  if (om) {
    om.setEventListener((setOnline) => {
      setOnline(rc.status === 'connected')
      return rc.on('status', (s) => setOnline(s === 'connected'))
    })
    offs.push(() => om.setEventListener((setOnline) => {
      setOnline(true)
      return () => {}
    }))
  }

  return {
    /**
     * optimistic applies a change to the cache at once and returns how to
     * undo it and when its echo arrives. change is {action: 'created', row}
     * (row without an id gets a temporary one), {action: 'updated', id,
     * changes} or {action: 'deleted', id}. The echo (the relay event whose
     * requestId is this one) replaces the temporary row with the real one
     * and resolves `echo`; rollback() undoes exactly this change, leaving
     * the events that arrived meanwhile.
     */
    optimistic(entity, requestId, change) {
      const spec = specs.get(entity)
      if (!spec) throw new TypeError(`rowcast: optimistic: entity ${entity} is not synced`)
      if (!requestId) throw new TypeError('rowcast: optimistic needs a requestId (newRequestId())')
      let resolve
      const echo = new Promise((r) => (resolve = r))
      const undo = []
      const id = change.action === 'created' ? String(change.row?.[spec.idField] ?? `tmp:${requestId}`) : String(change.id)
      pending.set(requestId, { resolve, entity, tempId: id })
      for (const query of cache.findAll({ queryKey: spec.list })) {
        const key = query.queryKey
        const cur = query.state.data
        if (Array.isArray(cur)) {
          const i = cur.findIndex((r) => String(r?.[spec.idField]) === id)
          if (change.action === 'created') {
            const row = { ...change.row, [spec.idField]: change.row?.[spec.idField] ?? id, [spec.requestIdField]: requestId }
            queryClient.setQueryData(key, (rows) => [row, ...(rows ?? [])])
            undo.push(() => queryClient.setQueryData(key, (rows) => rows?.filter((r) => r?.[spec.requestIdField] !== requestId)))
          } else if (i >= 0 && change.action === 'updated') {
            const before = pick(cur[i], Object.keys(change.changes ?? {}))
            queryClient.setQueryData(key, (rows) => rows?.map((r) => (String(r?.[spec.idField]) === id ? { ...r, ...change.changes } : r)))
            undo.push(() => queryClient.setQueryData(key, (rows) => rows?.map((r) => (String(r?.[spec.idField]) === id ? { ...r, ...before } : r))))
          } else if (i >= 0 && change.action === 'deleted') {
            const row = cur[i]
            queryClient.setQueryData(key, (rows) => rows?.filter((r) => String(r?.[spec.idField]) !== id))
            undo.push(() => queryClient.setQueryData(key, (rows) => {
              if (!rows || rows.some((r) => String(r?.[spec.idField]) === id)) return rows
              const out = [...rows]
              out.splice(Math.min(i, out.length), 0, row)
              return out
            }))
          }
        } else if (cur && typeof cur === 'object' && isDetailKey(spec, key, id) && change.action === 'updated') {
          const before = pick(cur, Object.keys(change.changes ?? {}))
          queryClient.setQueryData(key, (row) => ({ ...row, ...change.changes }))
          undo.push(() => queryClient.setQueryData(key, (row) => (row ? { ...row, ...before } : row)))
        }
      }
      return {
        id,
        echo,
        confirm(row) {
          // The write's own answer: the row as stored. It takes the
          // temporary row's place (or the row's, by id) in case the echo
          // comes late or never; an echo after it changes nothing more.
          if (!row || typeof row !== 'object' || change.action === 'deleted') return
          const realId = String(row[spec.idField])
          for (const query of cache.findAll({ queryKey: spec.list })) {
            if (!Array.isArray(query.state.data)) continue
            queryClient.setQueryData(query.queryKey, (rows) => {
              if (!Array.isArray(rows)) return rows
              const i = rows.findIndex((r) => r?.[spec.requestIdField] === requestId || String(r?.[spec.idField]) === realId)
              if (i < 0) return rows
              return rows.filter((r, j) => j === i || String(r?.[spec.idField]) !== realId).map((r) => (r === rows[i] ? row : r))
            })
          }
        },
        rollback() {
          pending.delete(requestId)
          for (const u of undo.reverse()) u()
          undo.length = 0
        },
      }
    },

    /** stop removes every listener syncQueries registered. */
    stop() {
      for (const off of offs.splice(0)) off()
      held.clear()
      pending.clear()
    },
  }
}

/** newRequestId returns a fresh id for an optimistic write's X-Request-Id. */
export function newRequestId() {
  if (globalThis.crypto?.randomUUID) return globalThis.crypto.randomUUID()
  return `r${Date.now().toString(36)}${Math.random().toString(36).slice(2, 10)}`
}

function normalize(entity, spec) {
  const o = Array.isArray(spec) ? { list: spec } : { ...spec }
  if (!Array.isArray(o.list) || o.list.length === 0) {
    throw new TypeError(`rowcast: syncQueries: ${entity} needs a query key array, like ['${entity}s']`)
  }
  return { entity, list: o.list, idField: o.idField ?? 'id', requestIdField: o.requestIdField ?? '_requestId' }
}

function isDetailKey(spec, key, id) {
  return key.length === spec.list.length + 1 && String(key[spec.list.length]) === id
}

function applyToList(spec, rows, data, id, echo) {
  if (!Array.isArray(rows)) return rows
  const same = (r) => String(r?.[spec.idField]) === id
  switch (data.action) {
    case 'created': {
      const row = data[spec.entity]
      if (!row || typeof row !== 'object') return rows
      // The echo of an optimistic create takes the temporary row's place.
      const tmp = echo ? rows.findIndex((r) => r?.[spec.requestIdField] === data.requestId) : -1
      if (tmp >= 0) {
        const out = rows.filter((r, i) => i === tmp || !same(r))
        out[out.indexOf(rows[tmp])] = row
        return out
      }
      const i = rows.findIndex(same)
      if (i >= 0) return rows.map((r, j) => (j === i ? row : r))
      return [row, ...rows]
    }
    case 'updated': {
      if (!data.changes) return rows
      let hit = false
      const out = rows.map((r) => {
        if (!same(r)) return r
        hit = true
        return { ...r, ...data.changes }
      })
      return hit ? out : rows
    }
    case 'deleted': {
      const out = rows.filter((r) => !same(r))
      return out.length === rows.length ? rows : out
    }
  }
  return rows
}

function applyToRow(spec, row, data) {
  if (!row) return row
  if (data.action === 'updated' && data.changes) return { ...row, ...data.changes }
  if (data.action === 'created' && data[spec.entity]) return data[spec.entity]
  return row
}

function pick(obj, keys) {
  const out = {}
  for (const k of keys) out[k] = obj?.[k]
  return out
}
