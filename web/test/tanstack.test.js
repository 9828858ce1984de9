import { test } from 'node:test'
import assert from 'node:assert/strict'
import { QueryClient, QueryObserver, MutationObserver, onlineManager } from '@tanstack/query-core'
import { connect } from '../client.js'
import { syncQueries, newRequestId } from '../tanstack.js'
import { FakeClock, fakeWebSocket, fakeTarget, settle } from './fakes.mjs'

// setup connects a client to a fake socket and syncs a fresh QueryClient.
async function setup(opts = {}) {
  const clock = new FakeClock()
  const { FakeWebSocket, sockets } = fakeWebSocket()
  const rc = connect({
    url: 'ws://relay.test/ws',
    token: 't',
    WebSocket: FakeWebSocket,
    storage: null,
    now: clock.now,
    timers: clock.timers,
    random: () => 0,
    window: fakeTarget(),
    document: fakeTarget({ visibilityState: 'visible' }),
    navigator: { onLine: true },
  })
  await settle()
  const qc = new QueryClient({ defaultOptions: { queries: { retry: false, staleTime: Infinity, networkMode: 'always' } } })
  qc.mount()
  const sync = syncQueries(rc, qc, { escrow: ['escrows'], lead: { list: ['leads'], idField: 'lead_id' } }, opts)
  const ws = sockets[0]
  ws.welcome({ position: 'p0' })
  let pos = 0
  const send = (event, data) => ws.receive({ type: 'event', event, position: `p${++pos}`, data })
  return { rc, qc, sync, ws, send, clock, sockets }
}

const escrows = () => [
  { id: 1, address: '1 Main St', status: 'open' },
  { id: 2, address: '2 Oak Ave', status: 'open' },
]

test('created prepends, updated merges changes, deleted removes: lists and details', async () => {
  const { qc, send } = await setup()
  qc.setQueryData(['escrows'], escrows())
  qc.setQueryData(['escrows', { status: 'open' }], escrows())
  qc.setQueryData(['escrows', '2'], escrows()[1])
  send('escrow:created', { entityType: 'escrow', entityId: '3', action: 'created', escrow: { id: 3, address: '3 Elm', status: 'open' } })
  send('escrow:updated', { entityType: 'escrow', entityId: '2', action: 'updated', changes: { status: 'closed' } })
  send('escrow:deleted', { entityType: 'escrow', entityId: '1', action: 'deleted' })
  const want = [
    { id: 3, address: '3 Elm', status: 'open' },
    { id: 2, address: '2 Oak Ave', status: 'closed' },
  ]
  assert.deepEqual(qc.getQueryData(['escrows']), want)
  assert.deepEqual(qc.getQueryData(['escrows', { status: 'open' }]), want)
  assert.deepEqual(qc.getQueryData(['escrows', '2']), { id: 2, address: '2 Oak Ave', status: 'closed' })
  send('escrow:deleted', { entityType: 'escrow', entityId: '2', action: 'deleted' })
  assert.equal(qc.getQueryCache().find({ queryKey: ['escrows', '2'], exact: true }), undefined, 'a deleted row\'s detail query is removed')
})

test('a configured id field; other entities and unknown events are left alone', async () => {
  const { qc, send } = await setup()
  qc.setQueryData(['leads'], [{ lead_id: 'a', name: 'Ann' }])
  qc.setQueryData(['clients'], [{ id: 1 }])
  send('lead:updated', { entityType: 'lead', entityId: 'a', action: 'updated', changes: { name: 'Anna' } })
  send('client:deleted', { entityType: 'client', entityId: '1', action: 'deleted' })
  send('ai:task:progress', { taskId: '9', progress: 10 })
  assert.deepEqual(qc.getQueryData(['leads']), [{ lead_id: 'a', name: 'Anna' }])
  assert.deepEqual(qc.getQueryData(['clients']), [{ id: 1 }])
})

test('applying an event twice changes nothing more', async () => {
  const { qc, send } = await setup()
  qc.setQueryData(['escrows'], escrows())
  const created = { entityType: 'escrow', entityId: '3', action: 'created', escrow: { id: 3, status: 'open' } }
  send('escrow:created', created)
  send('escrow:created', created)
  assert.equal(qc.getQueryData(['escrows']).filter((r) => r.id === 3).length, 1)
})

test('events that arrive during a list fetch are applied again to its result, with one request', async () => {
  const { qc, send } = await setup()
  let requests = 0
  let release
  const obs = new QueryObserver(qc, {
    queryKey: ['escrows'],
    queryFn: () => {
      requests++
      // The server's answer was read before the edit committed.
      return new Promise((r) => (release = () => r(escrows())))
    },
  })
  const unsub = obs.subscribe(() => {})
  await settle()
  assert.equal(qc.getQueryState(['escrows']).fetchStatus, 'fetching')
  send('escrow:updated', { entityType: 'escrow', entityId: '2', action: 'updated', changes: { status: 'closed' } })
  release()
  await settle()
  assert.equal(requests, 1)
  assert.deepEqual(qc.getQueryData(['escrows'])[1], { id: 2, address: '2 Oak Ave', status: 'closed' })

  // The same on a refetch of a list that has data.
  obs.refetch()
  await settle()
  send('escrow:updated', { entityType: 'escrow', entityId: '1', action: 'updated', changes: { status: 'pending' } })
  assert.equal(qc.getQueryData(['escrows'])[0].status, 'pending', 'applied at once too')
  release()
  await settle()
  assert.equal(requests, 2)
  assert.deepEqual(qc.getQueryData(['escrows']).map((r) => r.status), ['pending', 'open'],
    'held events are applied once to their own fetch: the first fetch\'s edit is gone from the second result')
  unsub()
})

test('events held for a cancelled fetch are not applied to a later one', async () => {
  const { qc, send } = await setup()
  qc.setQueryData(['escrows'], escrows())
  let calls = 0
  const fetched = [escrows(), [{ id: 1, address: '1 Main St', status: 'open' }, { id: 2, address: '2 Oak Ave', status: 'open' }]]
  const queryFn = ({ signal }) =>
    new Promise((resolve, reject) => {
      const n = calls++
      if (n === 0) signal.addEventListener('abort', () => reject(new Error('aborted')))
      else resolve(fetched[1])
    })
  const first = qc.fetchQuery({ queryKey: ['escrows'], queryFn, staleTime: 0 }).catch(() => {})
  await settle()
  send('escrow:updated', { entityType: 'escrow', entityId: '2', action: 'updated', changes: { status: 'closed' } })
  await qc.cancelQueries({ queryKey: ['escrows'] })
  await first
  // Later, a teammate reopens it; then a refetch returns the reopened row.
  send('escrow:updated', { entityType: 'escrow', entityId: '2', action: 'updated', changes: { status: 'open' } })
  await qc.fetchQuery({ queryKey: ['escrows'], queryFn, staleTime: 0 })
  await settle()
  assert.equal(qc.getQueryData(['escrows'])[1].status, 'open', 'a stale held event was applied to a later fetch')
})

test('a list whose data has not arrived yet is not touched', async () => {
  const { qc, send } = await setup()
  send('escrow:created', { entityType: 'escrow', entityId: '3', action: 'created', escrow: { id: 3 } })
  assert.equal(qc.getQueryData(['escrows']), undefined)
})

test('resync invalidates: every mapped query on history_expired, one entity on truncate', async () => {
  const { qc, ws } = await setup()
  qc.setQueryData(['escrows'], escrows())
  qc.setQueryData(['leads'], [])
  ws.receive({ type: 'resync', reason: 'truncate', entityType: 'lead' })
  assert.equal(qc.getQueryState(['escrows']).isInvalidated, false)
  assert.equal(qc.getQueryState(['leads']).isInvalidated, true)
  ws.receive({ type: 'resync', reason: 'history_expired' })
  assert.equal(qc.getQueryState(['escrows']).isInvalidated, true)
})

test('an optimistic update is confirmed by its echo and rolled back alone', async () => {
  const { qc, sync, send } = await setup()
  qc.setQueryData(['escrows'], escrows())
  const rid = newRequestId()
  const op = sync.optimistic('escrow', rid, { action: 'updated', id: 2, changes: { status: 'archived' } })
  assert.equal(qc.getQueryData(['escrows'])[1].status, 'archived')
  // Someone else edits another field of the same row meanwhile.
  send('escrow:updated', { entityType: 'escrow', entityId: '2', action: 'updated', changes: { address: '2 Oak Avenue' } })
  op.rollback()
  assert.deepEqual(qc.getQueryData(['escrows'])[1], { id: 2, address: '2 Oak Avenue', status: 'open' })

  const rid2 = newRequestId()
  const op2 = sync.optimistic('escrow', rid2, { action: 'updated', id: 1, changes: { status: 'closed' } })
  send('escrow:updated', { entityType: 'escrow', entityId: '1', action: 'updated', requestId: rid2, changes: { status: 'closed', updated_at: 'T' } })
  const echo = await op2.echo
  assert.equal(echo.requestId, rid2)
  assert.deepEqual(qc.getQueryData(['escrows'])[0], { id: 1, address: '1 Main St', status: 'closed', updated_at: 'T' })
})

test('an optimistic create is replaced by its echo, not doubled', async () => {
  const { qc, sync, send } = await setup()
  qc.setQueryData(['escrows'], escrows())
  const rid = newRequestId()
  const op = sync.optimistic('escrow', rid, { action: 'created', row: { address: '9 New Rd', status: 'open' } })
  assert.equal(op.id, `tmp:${rid}`)
  assert.equal(qc.getQueryData(['escrows'])[0].address, '9 New Rd')
  send('escrow:created', { entityType: 'escrow', entityId: '9', action: 'created', requestId: rid, escrow: { id: 9, address: '9 New Rd', status: 'open' } })
  assert.deepEqual(qc.getQueryData(['escrows']), [{ id: 9, address: '9 New Rd', status: 'open' }, ...escrows()])
  await op.echo
})

test('the write\'s answer replaces the temporary row; the late echo adds nothing', async () => {
  const { qc, sync, send } = await setup()
  qc.setQueryData(['escrows'], escrows())
  const rid = newRequestId()
  const op = sync.optimistic('escrow', rid, { action: 'created', row: { address: '9 New Rd' } })
  op.confirm({ id: 9, address: '9 New Rd', status: 'open' })
  assert.deepEqual(qc.getQueryData(['escrows']).map((r) => r.id), [9, 1, 2])
  send('escrow:created', { entityType: 'escrow', entityId: '9', action: 'created', requestId: rid, escrow: { id: 9, address: '9 New Rd', status: 'open' } })
  assert.deepEqual(qc.getQueryData(['escrows']).map((r) => r.id), [9, 1, 2])
})

test('an optimistic delete rolls back into its place', async () => {
  const { qc, sync } = await setup()
  qc.setQueryData(['escrows'], escrows())
  const op = sync.optimistic('escrow', newRequestId(), { action: 'deleted', id: 1 })
  assert.deepEqual(qc.getQueryData(['escrows']).map((r) => r.id), [2])
  op.rollback()
  assert.deepEqual(qc.getQueryData(['escrows']).map((r) => r.id), [1, 2])
})

test('mutations made while the relay is unreachable wait and run in order when it returns', async () => {
  const { rc, qc, ws, clock, sockets } = await setup({ onlineManager })
  assert.equal(onlineManager.isOnline(), true)
  ws.serverClose(1006)
  assert.equal(rc.status, 'reconnecting')
  assert.equal(onlineManager.isOnline(), false)
  const sent = []
  const run = (n) =>
    new MutationObserver(qc, { mutationFn: async () => sent.push(n), scope: { id: 'crm' } }).mutate().catch(() => {})
  const done = Promise.all([run(1), run(2), run(3)])
  await settle()
  assert.deepEqual(sent, [], 'nothing is sent while the relay is unreachable')
  await clock.advance(rc.nextDelay)
  sockets.at(-1).welcome()
  await done
  assert.deepEqual(sent, [1, 2, 3])
  assert.equal(onlineManager.isOnline(), true)
})

test('stop removes every listener', async () => {
  const { rc, sync } = await setup()
  const before = rc.listenerCount()
  sync.stop()
  assert.equal(rc.listenerCount(), before - 2)
})

test('bad entity maps are refused', () => {
  const qc = new QueryClient()
  const rc = { on: () => () => {}, onAny: () => () => {} }
  assert.throws(() => syncQueries(rc, qc, {}), /at least one entity/)
  assert.throws(() => syncQueries(rc, qc, { escrow: 'escrows' }), /query key array/)
})
