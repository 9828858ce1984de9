// Steps 3 and 4: a cut socket (badge, a write that waits and is sent once
// on reconnect, resumed without refetching) and a failing optimistic write
// that rolls back with a toast.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { launch, openApp, connected, cuttable, row, shot, sql, waitUntil } from './lib.mjs'

let browser
before(async () => {
  browser = await launch()
  await sql(`select rowcast.set_actor('1');
    insert into escrows (id, team_id, property_address, city, state, zip_code, purchase_price)
    overriding system value values
    (9001, 1, '5 Harbor Blvd', 'Long Beach', 'CA', '90802', 640000),
    (9002, 1, '8 Cedar Ln', 'Pasadena', 'CA', '91101', 720000)`)
})
after(() => browser?.close())

test('a write made while the socket is cut waits, is sent once on reconnect, and B sees it resumed', async () => {
  const link = cuttable()
  const A = await openApp(browser, '1', { before: (page) => link.install(page) })
  const B = await openApp(browser, '2')
  await row(B.page, 'escrow', 9001).waitFor()

  const t0 = Date.now()
  await link.cutNow()
  await A.page.locator('[data-testid=connection-status][data-status=reconnecting]').waitFor({ timeout: 5000 })
  const badgeMs = Date.now() - t0
  await shot(A.page, '06-cut-reconnecting')

  await row(A.page, 'escrow', 9001).locator('[data-action=archive]').click()
  await row(A.page, 'escrow', 9001).waitFor({ state: 'detached', timeout: 2000 }) // optimistic
  await A.page.waitForTimeout(1500)
  const archives = () => A.posts.filter((p) => p === 'POST /api/escrows/9001/archive').length
  assert.equal(archives(), 0, 'the archive was sent while the relay was unreachable')
  assert.equal(await row(B.page, 'escrow', 9001).count(), 1, 'B lost the escrow before A\'s write was sent')
  await shot(A.page, '07-cut-archived-waiting')

  link.restore()
  await connected(A.page, 20000)
  await waitUntil(() => archives() === 1, 5000, 'the archive request')
  await row(B.page, 'escrow', 9001).waitFor({ state: 'detached', timeout: 2000 })
  await A.page.waitForTimeout(500)
  assert.equal(archives(), 1, 'the archive was sent more than once')
  assert.match(A.sockets.at(-1), /[?&]since=/, 'A reconnected without its position')
  assert.equal(A.listGets('/api/escrows'), 1, 'A refetched the list after reconnecting')
  assert.equal(B.listGets('/api/escrows'), 1, 'B refetched the list')
  assert.equal(await A.page.locator('[data-testid=connection-status]').getAttribute('data-status'), 'connected')
  await shot(A.page, '08-reconnected-sent-once')
  await shot(B.page, '09-reconnected-B-sees-archive')
  console.log(`badge showed Reconnecting ${badgeMs}ms after the cut`)
  await Promise.all([A, B].map((p) => p.context.close()))
})

test('a failing optimistic write rolls back and shows an error toast', async () => {
  const A = await openApp(browser, '1')
  await row(A.page, 'escrow', 9002).waitFor()
  await A.page.check('[data-testid=fail-toggle]')
  await row(A.page, 'escrow', 9002).locator('[data-action=archive]').click()
  await row(A.page, 'escrow', 9002).waitFor({ state: 'detached', timeout: 2000 })
  await shot(A.page, '10-failing-write-optimistic')
  const toast = A.page.locator('[data-testid=toast]', { hasText: "Couldn't archive this escrow" })
  await toast.waitFor({ timeout: 5000 })
  await row(A.page, 'escrow', 9002).waitFor({ timeout: 1000 })
  await shot(A.page, '11-failing-write-rolled-back')
  assert.deepEqual(A.errors, [])
  await A.context.close()
})
