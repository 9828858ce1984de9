// Test doubles for the browser client: a WebSocket the test drives by hand,
// a clock whose timers run only when the test advances it, and an
// EventTarget standing in for window and document.

/** FakeClock runs setTimeout callbacks when advance passes their time. */
export class FakeClock {
  constructor(start = Date.parse('2026-12-01T00:00:00Z')) {
    this.t = start
    this.queue = [] // {at, fn, id}
    this.nextId = 1
    this.now = () => this.t
    this.timers = {
      setTimeout: (fn, ms) => {
        const id = this.nextId++
        this.queue.push({ at: this.t + Math.max(0, ms), fn, id })
        return id
      },
      clearTimeout: (id) => {
        this.queue = this.queue.filter((x) => x.id !== id)
      },
    }
  }

  /** advance moves the clock by ms, running every timer that falls due in order. */
  async advance(ms) {
    const end = this.t + ms
    for (;;) {
      this.queue.sort((a, b) => a.at - b.at || a.id - b.id)
      const next = this.queue[0]
      if (!next || next.at > end) break
      this.queue.shift()
      this.t = next.at
      next.fn()
      await settle()
    }
    this.t = end
    await settle()
  }

  /** pending is the number of scheduled timers. */
  get pending() {
    return this.queue.length
  }

  /** nextDue is how long until the next timer, or Infinity. */
  get nextDue() {
    return this.queue.length ? Math.min(...this.queue.map((x) => x.at)) - this.t : Infinity
  }
}

/** settle lets pending promise callbacks run. */
export async function settle() {
  for (let i = 0; i < 5; i++) await Promise.resolve()
  await new Promise((r) => setImmediate(r))
}

/** fakeWebSocket returns a WebSocket class whose instances land in sockets. */
export function fakeWebSocket() {
  const sockets = []
  class FakeWebSocket {
    constructor(url) {
      this.url = new URL(url)
      this.readyState = 0
      this.sent = []
      this.closedWith = null
      sockets.push(this)
    }
    send(text) {
      if (this.readyState !== 1) throw new Error('send on a socket that is not open')
      this.sent.push(JSON.parse(text))
    }
    close(code, reason) {
      this.closedWith = { code, reason }
      this.readyState = 3
    }
    // Test side.
    open() {
      this.readyState = 1
      this.onopen?.({})
    }
    receive(frame) {
      this.onmessage?.({ data: typeof frame === 'string' ? frame : JSON.stringify(frame) })
    }
    serverClose(code, reason = '') {
      this.readyState = 3
      this.onclose?.({ code, reason })
    }
    welcome(extra = {}) {
      this.open()
      this.receive({
        type: 'welcome',
        protocol: 1,
        sessionId: 's_1',
        userId: '3',
        teamIds: ['1'],
        position: 'head',
        heartbeatMs: 25000,
        expiresAt: null,
        ...extra,
      })
    }
  }
  return { FakeWebSocket, sockets }
}

/** memoryStorage is a sessionStorage stand-in. */
export function memoryStorage(init = {}) {
  const m = new Map(Object.entries(init))
  return {
    getItem: (k) => (m.has(k) ? m.get(k) : null),
    setItem: (k, v) => m.set(k, String(v)),
    map: m,
  }
}

/** fakeTarget is an EventTarget with the listener count exposed. */
export function fakeTarget(props = {}) {
  const t = new EventTarget()
  let n = 0
  const add = t.addEventListener.bind(t)
  const remove = t.removeEventListener.bind(t)
  t.addEventListener = (...a) => {
    n++
    add(...a)
  }
  t.removeEventListener = (...a) => {
    n--
    remove(...a)
  }
  Object.defineProperty(t, 'listeners', { get: () => n })
  Object.assign(t, props)
  return t
}
