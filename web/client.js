// rowcast browser client: one connection to a rowcast relay's plain
// WebSocket protocol (PROTOCOL.md, protocol 1) that reconnects, resumes from
// the last processed position and reports its state. No dependencies; a
// plain ES module. Types are in client.d.ts.
//
//   import { connect } from '/client.js'
//   const rc = connect({ url: 'wss://relay.example/ws', token: () => api.token() })
//   rc.on('status', s => badge(s))
//   const off = rc.on('escrow:updated', (data, meta) => patch(data))
//
// The connection's life is one state machine, read from rc.status:
//
//   connecting   the first attempt, before any welcome
//   connected    welcomed; events flow
//   reconnecting the connection was lost (or an attempt failed); a new one
//                is scheduled or under way
//   offline      the browser is offline, the relay refused the token for
//                good (4401 right after a fresh token, 4403), or rc.close()
//                was called; no attempt is made until the browser is online
//                again (never after close() or a refusal)

/** Close codes of PROTOCOL.md section 7 after which retrying cannot help. */
const FINAL_CODES = new Set([4400, 4403, 1009])

const DEFAULTS = {
  minDelayMs: 1000, // first retry window: a random wait in [0, minDelayMs)
  maxDelayMs: 30000, // cap of the window, which doubles with each attempt
  drainDelayMs: 5000, // first retry window after 1001: the relay is restarting
  stableMs: 10000, // a connection must stay up this long to reset the attempts
  pongTimeoutMs: 10000, // an unanswered ping this old means the link is dead
  welcomeTimeoutMs: 15000, // an attempt without a welcome this long fails
  heartbeatMs: 25000, // until the welcome says otherwise
  refreshBeforeMs: 60000, // refresh the token this long before it expires
}

/**
 * connect opens a session to a relay and returns its client; it never
 * throws for network trouble (see the 'error' event and onError).
 * @param {import('./client').ConnectOptions} options
 * @returns {import('./client').Client}
 */
export function connect(options) {
  return new Client(options)
}

/**
 * backoffDelay is the wait before reconnect attempt n (from 0): full
 * jitter, a random time in [0, min(max, base·2ⁿ)).
 */
export function backoffDelay(attempt, baseMs, maxMs, random = Math.random) {
  const window = Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 30))
  return Math.floor(random() * window)
}

class Client {
  constructor(options) {
    if (!options || typeof options.url !== 'string' || options.url === '') {
      throw new TypeError('rowcast: connect needs a url (ws://host/ws)')
    }
    const token = options.token
    if (token != null && typeof token !== 'string' && typeof token !== 'function') {
      throw new TypeError('rowcast: token must be a string or a function returning a promise of one')
    }
    this._o = { ...DEFAULTS, ...options }
    this._WebSocket = options.WebSocket ?? globalThis.WebSocket
    if (typeof this._WebSocket !== 'function') {
      throw new TypeError('rowcast: no WebSocket: pass options.WebSocket')
    }
    this._storage = options.storage === undefined ? defaultStorage() : options.storage
    this._key = options.storageKey ?? `rowcast:position:${options.url}`
    this._now = options.now ?? Date.now
    this._random = options.random ?? Math.random
    this._timers = options.timers ?? globalThis

    this.status = 'connecting'
    this.position = readStored(this._storage, this._key)
    this.attempt = 0 // failed attempts since the last stable connection
    this.nextDelay = 0 // the wait before the scheduled attempt, in ms
    this.sessionId = null
    this.teamIds = []
    this.userId = null

    this._listeners = new Map() // name -> Set of fns; '*' holds onAny
    this._ws = null
    this._gen = 0 // bumps with every socket, so stale callbacks do nothing
    this._timer = null // the pending reconnect, welcome or check timer
    this._pingId = 0
    this._closed = false
    this._fatal = false
    this._online = true

    this._install()
    this._open()
  }

  /** on registers fn for a frame or event name and returns its unsubscribe. */
  on(name, fn) {
    let set = this._listeners.get(name)
    if (!set) this._listeners.set(name, (set = new Set()))
    // Wrap so that registering the same function twice gives two listeners,
    // each removed by its own unsubscribe.
    const entry = { fn }
    set.add(entry)
    return () => {
      set.delete(entry)
      if (set.size === 0 && this._listeners.get(name) === set) this._listeners.delete(name)
    }
  }

  /** onAny registers fn(name, data, meta) for every event; returns its unsubscribe. */
  onAny(fn) {
    return this.on('*', fn)
  }

  /** listenerCount is the number of listeners (for leak checks in tests). */
  listenerCount(name) {
    if (name !== undefined) return this._listeners.get(name)?.size ?? 0
    let n = 0
    for (const set of this._listeners.values()) n += set.size
    return n
  }

  /**
   * subscribe narrows the session to these entity types (AI task events
   * always come), now and after every reconnect; null follows them all.
   */
  subscribe(entities) {
    this._entities = entities == null ? null : [...entities]
    if (this._entities && this.status === 'connected') this._send({ type: 'subscribe', entities: this._entities })
  }

  /** close ends the session for good; status becomes 'offline'. */
  close() {
    if (this._closed) return
    this._closed = true
    this._drop(1000, 'client closed')
    this._uninstall()
    this._setStatus('offline')
  }

  /** reconnectNow skips a pending backoff wait (a "retry now" button). */
  reconnectNow() {
    if (this._closed || this._fatal || this._ws) return
    this._clearTimer()
    this._open()
  }

  // --- connection ---

  async _open() {
    if (this._closed || this._fatal || !this._online) return
    const gen = ++this._gen
    // The attempt's deadline covers the token callback too: one that never
    // settles must not leave the client waiting for ever.
    this._after(this._o.welcomeTimeoutMs, () => {
      this._failed(new RowcastError('timeout', 'no welcome from the relay'))
    })
    let token = null
    try {
      token = await this._token()
    } catch (err) {
      if (gen !== this._gen) return
      this._failed(new RowcastError('token', `token callback failed: ${err?.message ?? err}`, { cause: err }))
      return
    }
    if (gen !== this._gen || this._closed || !this._online) return
    const url = new URL(this._o.url, globalThis.location?.href)
    if (url.protocol === 'http:') url.protocol = 'ws:'
    else if (url.protocol === 'https:') url.protocol = 'wss:'
    if (token) url.searchParams.set('access_token', token)
    this._since = this.position
    if (this._since) url.searchParams.set('since', this._since)
    let ws
    try {
      ws = new this._WebSocket(url.toString())
    } catch (err) {
      this._failed(new RowcastError('connect', `cannot open ${this._o.url}: ${err?.message ?? err}`, { cause: err }))
      return
    }
    this._ws = ws
    this._welcomed = false
    this._freshToken = typeof this._o.token === 'function'
    ws.onmessage = (e) => gen === this._gen && this._frame(e.data)
    ws.onclose = (e) => gen === this._gen && this._closedBy(e.code, e.reason)
    ws.onerror = () => {} // onclose follows and carries the code
  }

  async _token() {
    const t = this._o.token
    if (typeof t === 'function') return await t()
    return t ?? null
  }

  _frame(text) {
    this._lastFrameAt = this._now()
    this._pingSentAt = 0
    let f
    try {
      f = JSON.parse(text)
    } catch {
      return
    }
    if (!f || typeof f !== 'object') return
    switch (f.type) {
      case 'welcome':
        return this._welcome(f)
      case 'event':
        this._advance(f.position)
        return this._emitEvent(f.event, f.data, { position: f.position, event: f.event, replayed: !this._resumedDone })
      case 'resumed':
        this._resumedDone = true
        this._advance(f.position)
        return this._emit('resumed', f)
      case 'resync':
        if (f.reason === 'history_expired' && this._headAtWelcome) this._advance(this._headAtWelcome)
        this._resumedDone = true
        return this._emit('resync', f)
      case 'auth_ok':
        this._scheduleRefresh(f.expiresAt)
        return
      case 'error':
        if (f.code === 'forbidden' && f.teamId != null) {
          // auth.membership: the user left this team; no more of its events follow.
          this.teamIds = this.teamIds.filter((t) => t !== f.teamId)
        }
        return this._emit('error', new RowcastError(f.code ?? 'error', f.message ?? `left team ${f.teamId ?? '?'}`, { frame: f }))
      case 'pong':
      case 'subscribed':
        return
    }
  }

  _welcome(f) {
    this._welcomed = true
    this.sessionId = f.sessionId ?? null
    this.userId = f.userId ?? null
    this.teamIds = f.teamIds ?? []
    this._heartbeat = f.heartbeatMs > 0 ? f.heartbeatMs : this._o.heartbeatMs
    this._headAtWelcome = f.position
    // On a resumed connection the welcome's position is the relay's head, not
    // ours: keep ours until 'resumed' (PROTOCOL.md section 5).
    this._resumedDone = !this._since
    if (!this._since) this._advance(f.position)
    this._welcomedAt = this._now()
    this._scheduleRefresh(f.expiresAt)
    if (this._entities) this._send({ type: 'subscribe', entities: this._entities })
    this._setStatus('connected')
    this._emit('welcome', f)
    this._check()
  }

  _advance(position) {
    if (typeof position !== 'string' || position === '') return
    this.position = position
    if (this._storage) {
      try {
        this._storage.setItem(this._key, position)
      } catch {
        // storage full or denied: resume works for this page's life only
      }
    }
  }

  // _check runs while connected: it pings when the link has been quiet for a
  // heartbeat, declares it dead when a ping went unanswered, and refreshes the
  // token when due. Deadlines are timestamps, so a hidden tab whose timers
  // fire late still decides right when they do.
  _check() {
    if (!this._ws || !this._welcomed) return
    const now = this._now()
    if (this._pingSentAt && now - this._pingSentAt >= this._o.pongTimeoutMs) {
      this._failed(new RowcastError('timeout', 'the relay stopped answering'))
      return
    }
    if (this._refreshAt && now >= this._refreshAt) {
      this._refreshAt = 0
      this._refresh()
    }
    if (now - this._welcomedAt >= this._o.stableMs) this.attempt = 0
    if (!this._pingSentAt && now - this._lastFrameAt >= this._heartbeat) this._ping()
    const next = this._pingSentAt ? this._o.pongTimeoutMs : Math.max(1000, this._heartbeat / 2)
    this._after(Math.min(next, this._o.stableMs), () => this._check())
  }

  _ping() {
    this._pingSentAt = this._now()
    this._send({ type: 'ping', id: ++this._pingId })
  }

  _scheduleRefresh(expiresAt) {
    this._refreshAt = 0
    if (typeof this._o.token !== 'function' || !expiresAt) return
    const exp = Date.parse(expiresAt)
    if (Number.isNaN(exp)) return
    const left = exp - this._now()
    this._refreshAt = this._now() + Math.max(0, Math.min(left - this._o.refreshBeforeMs, left / 2))
  }

  async _refresh() {
    const ws = this._ws
    try {
      const token = await this._token()
      if (ws === this._ws && token) this._send({ type: 'auth', token })
    } catch (err) {
      this._reportError(new RowcastError('token', `token refresh failed: ${err?.message ?? err}`, { cause: err }))
      this._refreshAt = this._now() + 5000
    }
  }

  _send(msg) {
    if (this._ws && this._ws.readyState === 1) this._ws.send(JSON.stringify(msg))
  }

  _closedBy(code, reason) {
    const welcomed = this._welcomed
    this._ws = null
    this._clearTimer()
    if (this._closed) return
    const detail = `${code}${reason ? ' ' + reason : ''}`
    // A 4401 after a welcome is an expired session: a fresh token may fix it.
    // A 4401 to a token fetched for this very attempt cannot be fixed by
    // asking again, nor can a string token.
    if (code === 4401 && (!welcomed || typeof this._o.token !== 'function')) {
      return this._stop(new RowcastError('unauthorized', `the relay refused the token (${detail})`, { closeCode: code }))
    }
    if (FINAL_CODES.has(code)) {
      return this._stop(new RowcastError(code === 4403 ? 'forbidden' : 'closed', `closed by the relay (${detail})`, { closeCode: code }))
    }
    this._failed(new RowcastError('closed', `connection lost (${detail})`, { closeCode: code }), code)
  }

  // _failed ends the current attempt and schedules the next one.
  _failed(err, code) {
    this._drop(4000, 'client retry')
    this.attempt++
    this._reportError(err)
    if (this._closed || this._fatal) return
    if (!this._online) return this._setStatus('offline')
    const base = code === 1001 && this.attempt === 1 ? this._o.drainDelayMs : this._o.minDelayMs
    this.nextDelay = backoffDelay(this.attempt - 1, base, this._o.maxDelayMs, this._random)
    this._setStatus(this.status === 'connecting' && !this._everWelcomed ? 'connecting' : 'reconnecting')
    this._after(this.nextDelay, () => this._open())
  }

  _stop(err) {
    this._fatal = true
    this._drop(1000, 'client stopped')
    this._reportError(err)
    this._setStatus('offline')
  }

  _drop(code, reason) {
    this._clearTimer()
    const ws = this._ws
    this._ws = null
    this._gen++
    if (ws && ws.readyState <= 1) {
      try {
        ws.close(code, reason)
      } catch {
        // already closing
      }
    }
  }

  _reportError(err) {
    err.attempt = this.attempt
    if (typeof this._o.onError === 'function') {
      try {
        this._o.onError(err, { attempt: this.attempt, status: this.status })
      } catch (e) {
        this._reportListenerError(e)
      }
    }
    this._emit('error', err)
  }

  _reportListenerError(err) {
    const report = this._o.reportError ?? globalThis.reportError
    if (typeof report === 'function') return report(err)
    queueMicrotask(() => {
      throw err
    })
  }

  _setStatus(s) {
    if (s === 'connected') this._everWelcomed = true
    if (this.status === s) return
    this.status = s
    this._emit('status', s)
  }

  _after(ms, fn) {
    this._clearTimer()
    const gen = this._gen
    this._timer = this._timers.setTimeout(() => {
      this._timer = null
      if (gen === this._gen) fn()
    }, ms)
  }

  _clearTimer() {
    if (this._timer !== null) this._timers.clearTimeout(this._timer)
    this._timer = null
  }

  // --- browser signals ---

  _install() {
    const win = this._o.window ?? (typeof window !== 'undefined' ? window : null)
    const doc = this._o.document ?? (typeof document !== 'undefined' ? document : null)
    this._online = this._o.navigator?.onLine ?? globalThis.navigator?.onLine ?? true
    if (!this._online) this.status = 'offline'
    const onOnline = () => {
      this._online = true
      if (this._closed || this._fatal) return
      if (this._ws && this._welcomed) return this._ping()
      if (!this._ws) {
        this._clearTimer()
        this._setStatus(this._everWelcomed ? 'reconnecting' : 'connecting')
        this._open()
      }
    }
    const onOffline = () => {
      this._online = false
      if (this._closed || this._fatal) return
      this._drop(1000, 'browser offline')
      this._setStatus('offline')
    }
    const onVisible = () => {
      if (doc?.visibilityState !== 'visible' || this._closed || this._fatal) return
      if (this._ws && this._welcomed) {
        // A hidden tab's timers were throttled: look at the deadlines now.
        if (!this._pingSentAt) this._ping()
        this._check()
      } else if (!this._ws && this._online) {
        this.reconnectNow()
      }
    }
    win?.addEventListener?.('online', onOnline)
    win?.addEventListener?.('offline', onOffline)
    doc?.addEventListener?.('visibilitychange', onVisible)
    this._uninstall = () => {
      win?.removeEventListener?.('online', onOnline)
      win?.removeEventListener?.('offline', onOffline)
      doc?.removeEventListener?.('visibilitychange', onVisible)
    }
  }

  // --- listeners ---

  _emitEvent(name, data, meta) {
    this._call(this._listeners.get(name), [data, meta])
    this._call(this._listeners.get('*'), [name, data, meta])
  }

  _emit(name, arg) {
    this._call(this._listeners.get(name), [arg])
  }

  _call(set, args) {
    if (!set) return
    for (const { fn } of [...set]) {
      try {
        fn(...args)
      } catch (err) {
        // One failing handler must not stop the others or the socket; the
        // error goes where uncaught errors go (window's error event, which
        // error reporters such as Sentry listen to).
        this._reportListenerError(err)
      }
    }
  }
}

/** RowcastError is what 'error' listeners and onError receive. */
export class RowcastError extends Error {
  constructor(code, message, extra = {}) {
    super(message, extra.cause ? { cause: extra.cause } : undefined)
    this.name = 'RowcastError'
    this.code = code
    if (extra.closeCode !== undefined) this.closeCode = extra.closeCode
    if (extra.frame !== undefined) this.frame = extra.frame
    this.attempt = 0
  }
}

function defaultStorage() {
  try {
    return globalThis.sessionStorage ?? null
  } catch {
    return null // denied (sandboxed iframe, privacy settings)
  }
}

function readStored(storage, key) {
  try {
    return storage?.getItem(key) || null
  } catch {
    return null
  }
}
