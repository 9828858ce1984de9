// Measurements for the README and closing notes, not pass/fail goals (the
// machine is shared and noisy): the wire size of a one-field update frame,
// and the time from a write's commit to B's DOM update over 200 updates.
// Runs only with ROWCAST_MEASURE=1:
//
//   ROWCAST_MEASURE=1 go test -count=1 -v -run TestBrowser ./cmd/rowcast
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { launch, openApp, row, sql } from './lib.mjs'

const on = process.env.ROWCAST_MEASURE === '1'
let browser
before(async () => {
  if (!on) return
  browser = await launch()
  await sql(`insert into escrows (id, team_id, property_address, city, state, zip_code, purchase_price)
    overriding system value values (9301, 1, '0 Measure St', 'Fresno', 'CA', '93650', 300000)`)
})
after(() => browser?.close())

test('commit to DOM latency and frame size', { skip: !on && 'set ROWCAST_MEASURE=1' }, async () => {
  const B = await openApp(browser, '2')
  const frames = []
  B.page.on('websocket', (ws) => ws.on('framereceived', (f) => frames.push(f.payload)))
  await B.page.reload()
  await row(B.page, 'escrow', 9301).waitFor()
  await B.page.evaluate(() => {
    window.__lat = []
    window.__ev = 0
    window.__mut = 0
    const el = document.querySelector('[data-testid=list-escrow] [data-testid=row][data-id="9301"]')
    let last = null
    window.rowcast.on('escrow:updated', (d) => {
      window.__ev++
      last = d.committedAt
    })
    new MutationObserver(() => {
      window.__mut++
      if (last) window.__lat.push(performance.timeOrigin + performance.now() - Date.parse(last))
      last = null
    }).observe(el, { subtree: true, childList: true, characterData: true })
  })
  const n = 200
  for (let i = 1; i <= n; i++) {
    await sql(`update escrows set notes = null, property_address = '${i} Measure St' where id = 9301`)
    await row(B.page, 'escrow', 9301).locator('[data-field=property_address]', { hasText: `${i} Measure St` }).waitFor()
  }
  await B.page.waitForFunction((n) => window.__lat.length >= n, n, { timeout: 5000 }).catch(async (e) => {
    throw new Error(`${e.message}: ${JSON.stringify(await B.page.evaluate(() => ({ lat: window.__lat.length, ev: window.__ev, mut: window.__mut })))}`)
  })
  const lat = (await B.page.evaluate(() => window.__lat)).sort((a, b) => a - b)
  assert.equal(lat.length, n)
  const q = (p) => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))].toFixed(1)
  const frame = frames.find((f) => typeof f === 'string' && f.includes('"escrow:updated"') && f.includes('Measure St'))
  console.log(`commit to B's DOM over ${n} updates: p50 ${q(0.5)}ms p99 ${q(0.99)}ms max ${lat.at(-1).toFixed(1)}ms`)
  console.log(`one-field update frame: ${Buffer.byteLength(frame)} bytes: ${frame}`)
  await B.context.close()
})
