// Step 7: fifty clients and a relay restart: the first reconnects spread
// over at least two seconds, each resuming with since.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { BASE, launch, control, waitUntil } from './lib.mjs'

let browser
before(async () => (browser = await launch()))
after(() => browser?.close())

test('fifty clients reconnect spread out, each with since, after a relay restart', async () => {
  const context = await browser.newContext()
  const page = await context.newPage()
  await page.goto(`${BASE}/healthz`)
  await page.evaluate(async () => {
    const { connect } = await import('/client.js')
    const token = (await (await fetch('/api/demo/token?user=1')).json()).token
    window.__attempts = []
    window.__clients = Array.from({ length: 50 }, (_, i) => {
      class Logged extends WebSocket {
        constructor(url) {
          super(url)
          window.__attempts.push({ i, t: performance.now(), url })
        }
      }
      return connect({ url: '/ws', token, storage: null, WebSocket: Logged })
    })
  })
  const allConnected = () => page.evaluate(() => window.__clients.every((c) => c.status === 'connected'))
  await waitUntil(allConnected, 15000, '50 connected clients')
  const t0 = await page.evaluate(() => performance.now())
  await control('restart')
  await waitUntil(allConnected, 30000, '50 clients back after the restart')
  const attempts = await page.evaluate((t0) => window.__attempts.filter((a) => a.t > t0), t0)
  const first = new Map()
  for (const a of attempts) if (!first.has(a.i)) first.set(a.i, a)
  assert.equal(first.size, 50, 'not every client reconnected')
  const times = [...first.values()].map((a) => a.t)
  const spread = Math.max(...times) - Math.min(...times)
  assert.ok(spread >= 2000, `the first reconnects spread over ${Math.round(spread)}ms, want at least 2000`)
  for (const a of first.values()) assert.match(a.url, /[?&]since=/, `client ${a.i} reconnected without since`)
  console.log(`first reconnects of 50 clients spread over ${Math.round(spread)}ms`)
  await page.evaluate(() => window.__clients.forEach((c) => c.close()))
  await context.close()
})
