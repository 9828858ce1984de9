// Step 8: after five forced drops exactly one socket is open, one write
// makes one DOM update, and listener counts return to their baseline after
// components mount and unmount.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { launch, openApp, connected, cuttable, api, row, sql, shot, waitUntil } from './lib.mjs'

let browser
before(async () => {
  browser = await launch()
  await sql(`insert into escrows (id, team_id, property_address, city, state, zip_code, purchase_price)
    overriding system value values (9101, 1, '3 Pine Ct', 'Eugene', 'OR', '97401', 410000)`)
})
after(() => browser?.close())

test('five drops later: one socket, one DOM update per write, no leaked listeners', async () => {
  const link = cuttable()
  const B = await openApp(browser, '2', { before: (page) => link.install(page) })
  await row(B.page, 'escrow', 9101).waitFor()
  const baseline = await B.page.evaluate(() => window.rowcast.listenerCount())
  for (let i = 0; i < 5; i++) {
    const opened = link.opened
    await link.drop()
    await B.page.locator('[data-testid=connection-status]:not([data-status=connected])').waitFor({ timeout: 2000 })
    await waitUntil(() => link.opened > opened, 40000, `reconnect ${i + 1}`)
    await connected(B.page, 10000)
  }
  assert.equal(link.open.size, 1, `${link.open.size} sockets open after five drops`)
  assert.equal(await B.page.evaluate(() => window.rowcast.listenerCount()), baseline, 'reconnects added listeners')

  await B.page.evaluate(() => {
    window.__updates = 0
    window.__events = 0
    window.rowcast.on('escrow:updated', () => window.__events++)
    const el = document.querySelector('[data-testid=list-escrow] [data-testid=row][data-id="9101"] [data-field=property_address]')
    new MutationObserver(() => window.__updates++).observe(el, { subtree: true, childList: true, characterData: true })
  })
  await api('1', 'PATCH', '/api/escrows/9101', { property_address: '5 Pine Ct' })
  await row(B.page, 'escrow', 9101).locator('[data-field=property_address]', { hasText: '5 Pine Ct' }).waitFor({ timeout: 2000 })
  await B.page.waitForTimeout(500)
  const { updates, events } = await B.page.evaluate(() => ({ updates: window.__updates, events: window.__events }))
  assert.equal(events, 1, `one write delivered ${events} events`)
  assert.equal(updates, 1, `one write made ${updates} DOM updates`)

  const withWatch = await B.page.evaluate(() => window.rowcast.listenerCount())
  for (let i = 0; i < 3; i++) {
    await B.page.click('[data-action=hide-assistant]')
    const hidden = await B.page.evaluate(() => window.rowcast.listenerCount())
    assert.ok(hidden < withWatch, `unmounting the assistant left ${hidden} listeners of ${withWatch}`)
    await B.page.click('[data-action=show-assistant]')
    assert.equal(await B.page.evaluate(() => window.rowcast.listenerCount()), withWatch, `mount ${i + 1} changed the listener count`)
  }
  await shot(B.page, '16-after-five-drops')
  assert.deepEqual(B.errors, [])
  await B.context.close()
})
