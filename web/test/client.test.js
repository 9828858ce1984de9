import { test } from 'node:test'
import assert from 'node:assert/strict'
import { connect, backoffDelay } from '../client.js'
import { FakeClock, fakeWebSocket, memoryStorage, fakeTarget, settle } from './fakes.mjs'

const URL_ = 'ws://relay.test/ws'
const KEY = `rowcast:position:${URL_}`

// setup returns a client wired to fakes, plus the fakes.
function setup(opts = {}) {
  const clock = new FakeClock()
  const { FakeWebSocket, sockets } = fakeWebSocket()
  const storage = opts.storage ?? memoryStorage()
  const window = fakeTarget()
  const document = fakeTarget({ visibilityState: 'visible' })
  const navigator = { onLine: true }
  const errors = []
  let tokens = 0
  const rc = connect({
    url: URL_,
    token: async () => `t${++tokens}`,
    WebSocket: FakeWebSocket,
    storage,
    now: clock.now,
    timers: clock.timers,
    random: () => 0.999,
    window,
    document,
    navigator,
    onError: (err, info) => errors.push({ err, info }),
    ...opts,
  })
  const statuses = []
  rc.on('status', (s) => statuses.push(s))
  return { rc, clock, sockets, storage, window, document, navigator, errors, statuses, last: () => sockets.at(-1) }
}

test('connects with a fresh token and keeps the welcome position', async () => {
  const { rc, sockets, storage, statuses, last } = setup()
  assert.equal(rc.status, 'connecting')
  await settle()
  assert.equal(sockets.length, 1)
  assert.equal(last().url.searchParams.get('access_token'), 't1')
  assert.equal(last().url.searchParams.get('since'), null)
  last().welcome({ position: 'p0' })
  assert.equal(rc.status, 'connected')
  assert.deepEqual(statuses, ['connected'])
  assert.equal(rc.position, 'p0')
  assert.equal(storage.getItem(KEY), 'p0')
  assert.equal(rc.userId, '3')
  assert.deepEqual(rc.teamIds, ['1'])
})

test('delivers events by name and to onAny, advancing the position', async () => {
  const { rc, storage, last } = setup()
  await settle()
  last().welcome({ position: 'p0' })
  const got = []
  const off = rc.on('escrow:updated', (data, meta) => got.push(['named', data.entityId, meta.position, meta.replayed]))
  rc.onAny((name, data) => got.push(['any', name, data.entityId]))
  last().receive({ type: 'event', event: 'escrow:updated', position: 'p1', data: { entityId: '42' } })
  last().receive({ type: 'event', event: 'lead:created', position: 'p2', data: { entityId: '7' } })
  off()
  last().receive({ type: 'event', event: 'escrow:updated', position: 'p3', data: { entityId: '43' } })
  assert.deepEqual(got, [
    ['named', '42', 'p1', false],
    ['any', 'escrow:updated', '42'],
    ['any', 'lead:created', '7'],
    ['any', 'escrow:updated', '43'],
  ])
  assert.equal(rc.position, 'p3')
  assert.equal(storage.getItem(KEY), 'p3')
})

test('resumes from the stored position and never stores the welcome position of a resumed connection', async () => {
  const storage = memoryStorage({ [KEY]: 'p5' })
  const { rc, last } = setup({ storage })
  await settle()
  assert.equal(last().url.searchParams.get('since'), 'p5')
  last().welcome({ position: 'head9' })
  assert.equal(rc.position, 'p5', 'the welcome of a resumed connection is the relay head, not ours')
  const replayed = []
  rc.on('lead:updated', (d, meta) => replayed.push(meta.replayed))
  last().receive({ type: 'event', event: 'lead:updated', position: 'p6', data: {} })
  assert.equal(rc.position, 'p6')
  assert.equal(storage.getItem(KEY), 'p6')
  last().receive({ type: 'resumed', position: 'p6', replayed: 1 })
  last().receive({ type: 'event', event: 'lead:updated', position: 'p7', data: {} })
  assert.deepEqual(replayed, [true, false])
  assert.equal(storage.getItem(KEY), 'p7')
})

test('after history_expired the position is the head at the welcome', async () => {
  const storage = memoryStorage({ [KEY]: 'old' })
  const { rc, last } = setup({ storage })
  await settle()
  const resyncs = []
  rc.on('resync', (r) => resyncs.push(r.reason))
  last().welcome({ position: 'head9' })
  last().receive({ type: 'resync', reason: 'history_expired' })
  assert.deepEqual(resyncs, ['history_expired'])
  assert.equal(rc.position, 'head9')
  assert.equal(storage.getItem(KEY), 'head9')
})

test('reconnects after a drop with a growing, jittered window and resumes', async () => {
  const { rc, clock, sockets, last, errors, statuses } = setup()
  await settle()
  last().welcome({ position: 'p0' })
  last().receive({ type: 'event', event: 'escrow:created', position: 'p1', data: {} })
  last().serverClose(1006)
  assert.equal(rc.status, 'reconnecting')
  assert.equal(rc.attempt, 1)
  assert.ok(rc.nextDelay >= 0 && rc.nextDelay < 1000, `first window [0,1000): ${rc.nextDelay}`)
  assert.equal(errors.length, 1)
  assert.equal(errors[0].err.closeCode, 1006)
  assert.equal(errors[0].info.attempt, 1)
  await clock.advance(rc.nextDelay)
  assert.equal(sockets.length, 2)
  assert.equal(last().url.searchParams.get('since'), 'p1')
  assert.equal(last().url.searchParams.get('access_token'), 't2', 'the token callback runs before every attempt')
  last().serverClose(1006) // refused before a welcome
  assert.equal(rc.attempt, 2)
  assert.ok(rc.nextDelay >= 1000 && rc.nextDelay < 2000, `second window [0,2000) at random 0.999: ${rc.nextDelay}`)
  await clock.advance(rc.nextDelay)
  last().welcome({ position: 'head' })
  assert.equal(rc.status, 'connected')
  assert.equal(rc.attempt, 2, 'the attempts are not reset by a welcome alone')
  await clock.advance(10000)
  assert.equal(rc.attempt, 0, 'a connection that stayed up resets the attempts')
  assert.deepEqual(statuses, ['connected', 'reconnecting', 'connected'])
})

test('after a drain (1001) the first retry spreads over the drain window', async () => {
  const delays = []
  for (const r of [0, 0.5, 0.999]) {
    const { rc, last } = setup({ random: () => r })
    await settle()
    last().welcome()
    last().serverClose(1001, 'relay draining')
    delays.push(rc.nextDelay)
    rc.close()
  }
  assert.deepEqual(delays, [0, 2500, 4995])
})

test('a refused fresh token stops retrying; an expired session gets a new token', async () => {
  {
    const { rc, clock, sockets, last, errors } = setup()
    await settle()
    last().serverClose(4401, 'unauthorized')
    assert.equal(rc.status, 'offline')
    assert.equal(errors.at(-1).err.code, 'unauthorized')
    await clock.advance(120000)
    assert.equal(sockets.length, 1, 'no retry after a refusal')
  }
  {
    const { rc, clock, sockets, last } = setup()
    await settle()
    last().welcome()
    last().receive({ type: 'error', code: 'token_expired' })
    last().serverClose(4401, 'token expired')
    assert.equal(rc.status, 'reconnecting')
    await clock.advance(rc.nextDelay)
    assert.equal(sockets.length, 2)
    assert.equal(last().url.searchParams.get('access_token'), 't2')
  }
  {
    const { rc, clock, sockets, last } = setup({ token: 'fixed' })
    await settle()
    last().welcome()
    last().serverClose(4401, 'token expired')
    assert.equal(rc.status, 'offline', 'a string token cannot be renewed')
    await clock.advance(120000)
    assert.equal(sockets.length, 1)
  }
})

test('a token callback that never settles fails the attempt at the welcome deadline', async () => {
  let calls = 0
  const { rc, clock, sockets } = setup({ token: () => (++calls === 1 ? new Promise(() => {}) : Promise.resolve('t')) })
  await settle()
  assert.equal(sockets.length, 0)
  await clock.advance(15000)
  assert.equal(rc.attempt, 1)
  await clock.advance(rc.nextDelay)
  assert.equal(calls, 2)
  assert.equal(sockets.length, 1, 'the next attempt connects')
})

test('a relay that never welcomes fails the attempt', async () => {
  const { rc, clock, sockets, last } = setup()
  await settle()
  last().open()
  await clock.advance(15000)
  assert.equal(rc.attempt, 1)
  assert.equal(sockets[0].closedWith.code, 4000)
  await clock.advance(rc.nextDelay)
  assert.equal(sockets.length, 2)
})

test('4403 and 4400 are final; 4008 and 4429 retry', async () => {
  for (const [code, want] of [[4403, 'offline'], [4400, 'offline'], [4008, 'reconnecting'], [4429, 'reconnecting']]) {
    const { rc, last } = setup()
    await settle()
    last().welcome()
    last().serverClose(code)
    assert.equal(rc.status, want, `close ${code}`)
    rc.close()
  }
})

test('a forbidden frame removes its team and is reported as an error', async () => {
  const { rc, last } = setup()
  await settle()
  last().welcome({ teamIds: ['1', '2'] })
  const got = []
  rc.on('error', (err) => got.push([err.code, err.frame.teamId]))
  last().receive({ type: 'error', code: 'forbidden', teamId: '1' })
  assert.deepEqual(rc.teamIds, ['2'])
  assert.deepEqual(got, [['forbidden', '1']])
  rc.close()
})

test('a quiet link is pinged and an unanswered ping ends it', async () => {
  const { rc, clock, sockets, last } = setup()
  await settle()
  last().welcome({ heartbeatMs: 20000 })
  await clock.advance(20000)
  assert.deepEqual(last().sent.at(-1), { type: 'ping', id: 1 })
  last().receive({ type: 'pong', id: 1 })
  await clock.advance(20000)
  assert.deepEqual(last().sent.at(-1), { type: 'ping', id: 2 })
  assert.equal(rc.status, 'connected')
  await clock.advance(10000) // no pong
  assert.equal(rc.status, 'reconnecting')
  assert.equal(sockets[0].closedWith.code, 4000)
})

test('a hidden tab whose timers fired late pings before it declares the link dead', async () => {
  const { rc, clock, last, document } = setup()
  await settle()
  last().welcome({ heartbeatMs: 20000 })
  // The tab was hidden for ten minutes and no timer ran.
  clock.t += 600000
  document.dispatchEvent(new Event('visibilitychange'))
  assert.equal(last().sent.at(-1).type, 'ping')
  assert.equal(rc.status, 'connected', 'a long silence alone is no proof of a dead link')
  last().receive({ type: 'pong', id: last().sent.at(-1).id })
  await clock.advance(15000)
  assert.equal(rc.status, 'connected')
})

test('offline closes the socket and waits; online reconnects at once', async () => {
  const { rc, clock, sockets, last, window, navigator } = setup()
  await settle()
  last().welcome({ position: 'p0' })
  navigator.onLine = false
  window.dispatchEvent(new Event('offline'))
  assert.equal(rc.status, 'offline')
  assert.equal(sockets[0].closedWith.code, 1000)
  await clock.advance(120000)
  assert.equal(sockets.length, 1, 'no attempts while offline')
  window.dispatchEvent(new Event('online'))
  await settle()
  assert.equal(rc.status, 'reconnecting')
  assert.equal(sockets.length, 2)
  assert.equal(last().url.searchParams.get('since'), 'p0')
})

test('handlers are registered once: five drops later one event calls each once', async () => {
  const { rc, clock, sockets, last } = setup()
  await settle()
  let calls = 0
  rc.on('escrow:updated', () => calls++)
  const baseline = rc.listenerCount()
  for (let i = 0; i < 5; i++) {
    last().welcome()
    last().serverClose(1006)
    await clock.advance(rc.nextDelay)
  }
  last().welcome()
  assert.equal(sockets.filter((s) => s.readyState <= 1).length, 1, 'exactly one socket open')
  last().receive({ type: 'event', event: 'escrow:updated', position: 'p9', data: {} })
  assert.equal(calls, 1)
  assert.equal(rc.listenerCount(), baseline)
})

test('a function token is refreshed in-band before it expires', async () => {
  const { rc, clock, sockets, last } = setup()
  await settle()
  const exp = new Date(clock.t + 5 * 60000).toISOString()
  last().welcome({ expiresAt: exp, heartbeatMs: 3600000 })
  await clock.advance(4 * 60000)
  assert.deepEqual(last().sent.find((m) => m.type === 'auth'), { type: 'auth', token: 't2' })
  last().receive({ type: 'auth_ok', expiresAt: new Date(clock.t + 5 * 60000).toISOString() })
  assert.equal(sockets.length, 1)
  assert.equal(rc.status, 'connected')
})

test('subscribe is sent now and after every reconnect', async () => {
  const { rc, clock, last } = setup()
  await settle()
  last().welcome()
  rc.subscribe(['escrow'])
  assert.deepEqual(last().sent.at(-1), { type: 'subscribe', entities: ['escrow'] })
  last().serverClose(1006)
  await clock.advance(rc.nextDelay)
  last().welcome()
  assert.deepEqual(last().sent.at(-1), { type: 'subscribe', entities: ['escrow'] })
})

test('close ends the session and removes the browser listeners', async () => {
  const { rc, clock, sockets, last, window, document } = setup()
  await settle()
  assert.equal(window.listeners, 2)
  assert.equal(document.listeners, 1)
  last().welcome()
  rc.close()
  assert.equal(rc.status, 'offline')
  assert.equal(sockets[0].closedWith.code, 1000)
  assert.equal(window.listeners, 0)
  assert.equal(document.listeners, 0)
  await clock.advance(120000)
  assert.equal(sockets.length, 1)
  assert.equal(clock.pending, 0, 'no timer left behind')
})

test('a throwing listener does not stop the others', async () => {
  const { rc, last } = setup()
  await settle()
  last().welcome()
  let second = 0
  const thrown = []
  rc._o.reportError = (e) => thrown.push(e.message)
  rc.on('lead:created', () => {
    throw new Error('boom')
  })
  rc.on('lead:created', () => second++)
  last().receive({ type: 'event', event: 'lead:created', position: 'p1', data: {} })
  assert.equal(second, 1)
  await settle()
  assert.deepEqual(thrown, ['boom'])
})

test('bad options are refused with a clear error', () => {
  assert.throws(() => connect({}), /needs a url/)
  assert.throws(() => connect({ url: URL_, token: 5, WebSocket: class {} }), /token must be/)
  assert.throws(() => connect({ url: URL_, WebSocket: null }), /no WebSocket/)
})

test('backoffDelay: full jitter under a doubling, capped window', () => {
  const cases = [
    [0, 0, 0],
    [0, 0.999, 999],
    [1, 0.5, 1000],
    [3, 0.999, 7992],
    [10, 0.999, 29970],
    [1000, 0.5, 15000],
  ]
  for (const [attempt, r, want] of cases) {
    assert.equal(backoffDelay(attempt, 1000, 30000, () => r), want, `attempt ${attempt} random ${r}`)
  }
})
