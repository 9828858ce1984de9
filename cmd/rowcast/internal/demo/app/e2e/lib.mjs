// Helpers of the demo app's end-to-end tests: a headless Chromium, the app
// opened as a user, the relay's control endpoint and screenshots. The Go
// test TestBrowser (cmd/rowcast/browser_test.go) starts the relay and sets
// ROWCAST_URL, ROWCAST_CONTROL, ROWCAST_CHROMIUM and ROWCAST_SCREENSHOTS.

import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { chromium } from 'playwright-core'

export const BASE = need('ROWCAST_URL')
export const CONTROL = need('ROWCAST_CONTROL')
const SHOTS = process.env.ROWCAST_SCREENSHOTS || new URL('./screenshots', import.meta.url).pathname

function need(name) {
  const v = process.env[name]
  if (!v) throw new Error(`${name} is not set: run these tests with go test -run TestBrowser ./cmd/rowcast`)
  return v
}

/** launch starts headless Chromium (Debian's package, ROWCAST_CHROMIUM). */
export function launch() {
  return chromium.launch({
    executablePath: process.env.ROWCAST_CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  })
}

/**
 * openApp opens the demo app as user and waits until it is connected and
 * its lists are loaded, unless wait is false. It records the page's API
 * GETs (gets) and WebSocket URLs (sockets), and collects page errors.
 */
export async function openApp(browser, user, { before, wait = true } = {}) {
  const context = await browser.newContext({ viewport: { width: 1440, height: 900 } })
  const page = await context.newPage()
  const gets = []
  const posts = []
  const sockets = []
  const errors = []
  page.on('request', (r) => {
    const u = new URL(r.url())
    if (!u.pathname.startsWith('/api/')) return
    if (r.method() === 'GET') gets.push(u.pathname)
    else posts.push(`${r.method()} ${u.pathname}`)
  })
  page.on('websocket', (ws) => sockets.push(ws.url()))
  page.on('pageerror', (e) => errors.push(e.message))
  if (before) await before(page, context)
  await page.goto(`${BASE}/?user=${user}`)
  if (wait) {
    await connected(page)
    for (const e of ['escrow', 'lead', 'appointment', 'listing', 'client']) {
      await page.locator(`[data-testid=list-${e}] .empty:has-text("Loading"), [data-testid=list-${e}] .empty:has-text("Waiting")`).waitFor({ state: 'detached' })
    }
  }
  return { context, page, gets, posts, sockets, errors, listGets: (path) => gets.filter((g) => g === path).length }
}

/** connected waits for the badge to say Connected. */
export function connected(page, timeout = 15000) {
  return page.locator('[data-testid=connection-status][data-status=connected]').waitFor({ timeout })
}

/** row is the locator of the row with that id in an entity's list. */
export function row(page, entity, id) {
  return page.locator(`[data-testid=list-${entity}] [data-testid=row][data-id="${id}"]`)
}

/** rowByText is the locator of the rows of an entity's list holding text. */
export function rowByText(page, entity, text) {
  return page.locator(`[data-testid=list-${entity}] [data-testid=row]`, { hasText: text })
}

/** control posts to the relay's control endpoint (stop, start, restart, sql). */
export async function control(path, body) {
  const res = await fetch(`${CONTROL}/${path}`, { method: 'POST', body })
  if (!res.ok) throw new Error(`control ${path}: ${res.status} ${await res.text()}`)
}

/** sql runs statements on the CRM database. */
export const sql = (q) => control('sql', q)

/** api calls the demo REST API as user. */
export async function api(user, method, path, body, headers = {}) {
  const tok = await (await fetch(`${BASE}/api/demo/token?user=${user}`)).json()
  const res = await fetch(`${BASE}${path}`, {
    method,
    headers: { Authorization: `Bearer ${tok.token}`, 'Content-Type': 'application/json', ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  })
  const out = await res.json()
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${out.error}`)
  return out
}

/**
 * shot saves a screenshot of page as <name>.png in the screenshots folder,
 * as a person sees the page once it settles: finite CSS animations and
 * transitions (a task card's entry, a progress bar's fill) are played to
 * their end, infinite ones (the badge's pulse) shown at their start.
 */
export async function shot(page, name) {
  mkdirSync(SHOTS, { recursive: true })
  await page.screenshot({ path: join(SHOTS, `${name}.png`), animations: 'disabled' })
}

/** waitUntil polls fn until it returns a truthy value or timeout ms pass. */
export async function waitUntil(fn, timeout = 5000, what = 'condition') {
  const end = Date.now() + timeout
  for (;;) {
    const v = await fn()
    if (v) return v
    if (Date.now() > end) throw new Error(`timed out after ${timeout}ms waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 25))
  }
}

/**
 * cuttable routes a page's WebSocket through Playwright so a test can drop
 * it, or cut the link (every new attempt is closed at once) and restore it.
 * open holds the live connections, each a page side and a relay side.
 */
export function cuttable() {
  const state = { cut: false, open: new Set(), opened: 0 }
  const close = async (conn, reason) => {
    state.open.delete(conn)
    await conn.page.close({ code: 4000, reason })
    await conn.relay.close({ code: 1000, reason })
  }
  state.install = (page) =>
    page.routeWebSocket(/\/ws/, (ws) => {
      if (state.cut) {
        ws.close({ code: 4000, reason: 'cut by the test' })
        return
      }
      state.opened++
      const conn = { page: ws, relay: ws.connectToServer() }
      state.open.add(conn)
      // With an onClose handler, closes are no longer forwarded: forward them.
      ws.onClose((code, reason) => {
        state.open.delete(conn)
        conn.relay.close({ code: code ?? 1000, reason })
      })
      conn.relay.onClose((code, reason) => {
        state.open.delete(conn)
        ws.close({ code: code ?? 1000, reason })
      })
    })
  state.cutNow = async () => {
    state.cut = true
    for (const conn of [...state.open]) await close(conn, 'cut by the test')
  }
  state.drop = async () => {
    for (const conn of [...state.open]) await close(conn, 'dropped by the test')
  }
  state.restore = () => {
    state.cut = false
  }
  return state
}
