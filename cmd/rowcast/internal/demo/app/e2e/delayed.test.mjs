// Step 9: B's list response is held while A edits a row: B ends with the
// new value after one list request.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { launch, openApp, api, row, sql, shot, waitUntil } from './lib.mjs'

let browser
before(async () => {
  browser = await launch()
  await sql(`insert into escrows (id, team_id, property_address, city, state, zip_code, purchase_price)
    overriding system value values (9201, 1, '12 Bay Rd', 'Monterey', 'CA', '93940', 880000)`)
})
after(() => browser?.close())

test('an edit made while the list fetch is in flight survives its older result', async () => {
  let release
  const gate = new Promise((r) => (release = r))
  let held = 0
  const B = await openApp(browser, '2', {
    wait: false,
    before: (page) =>
      page.route('**/api/escrows', async (route) => {
        const response = await route.fetch() // read now, before A's edit
        held++
        await gate
        await route.fulfill({ response })
      }),
  })
  await B.page.locator('[data-testid=connection-status][data-status=connected]').waitFor({ timeout: 15000 })
  await waitUntil(() => held === 1, 5000, 'the held list response')
  const before = await B.page.evaluate(() => window.rowcast.position)
  await api('1', 'PATCH', '/api/escrows/9201', { property_address: '14 Bay Rd' })
  await waitUntil(() => B.page.evaluate((p) => window.rowcast.position !== p, before), 5000, 'B to receive the edit')
  await B.page.waitForTimeout(1000) // the list response stays late a second longer
  release()
  await row(B.page, 'escrow', 9201).locator('[data-field=property_address]', { hasText: '14 Bay Rd' }).waitFor({ timeout: 2000 })
  await B.page.waitForTimeout(300)
  assert.equal(B.listGets('/api/escrows'), 1, `B fetched the list ${B.listGets('/api/escrows')} times`)
  assert.equal(await row(B.page, 'escrow', 9201).locator('[data-field=property_address]').innerText(), '14 Bay Rd')
  await shot(B.page, '17-delayed-list-keeps-edit')
  assert.deepEqual(B.errors, [])
  await B.context.close()
})
