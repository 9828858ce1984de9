// Steps 1 and 2: teammates see each other's changes within a second without
// refetching; another team sees none of it.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { launch, openApp, row, rowByText, shot } from './lib.mjs'

let browser
before(async () => (browser = await launch()))
after(() => browser?.close())

test('create, edit and delete in A appear in B within a second; team 2 sees nothing', async () => {
  const A = await openApp(browser, '1')
  const B = await openApp(browser, '2')
  const C = await openApp(browser, '4')
  await C.page.evaluate(() => {
    window.__seen = []
    window.rowcast.onAny((name, data) => window.__seen.push(`${name} ${data.entityId}`))
  })
  await shot(A.page, '01-teammates-before')

  // Create.
  await A.page.click('[data-testid=list-escrow] [data-action=new]')
  await A.page.fill('[data-testid=new-escrow] input[name=property_address]', '77 Live Oak Rd')
  let t0 = Date.now()
  await A.page.click('[data-testid=new-escrow] button[type=submit]')
  await rowByText(A.page, 'escrow', '77 Live Oak Rd').waitFor({ timeout: 2000 }) // optimistic: before the request returns (2 s for a loaded CI machine)
  const created = rowByText(B.page, 'escrow', '77 Live Oak Rd')
  await created.waitFor({ timeout: 1000 })
  const createdMs = Date.now() - t0
  const id = await created.getAttribute('data-id')
  assert.match(id, /^\d+$/, 'B shows the stored row, not an optimistic one')
  await row(A.page, 'escrow', id).waitFor({ timeout: 1000 }) // A's temporary row became the real one
  assert.equal(await rowByText(A.page, 'escrow', '77 Live Oak Rd').count(), 1, 'the echo did not double the row in A')
  await shot(B.page, '02-teammates-created-in-B')

  // Edit.
  await row(A.page, 'escrow', id).locator('[data-action=edit]').click()
  await A.page.fill('[data-testid=list-escrow] input[data-edit=property_address]', '79 Live Oak Rd')
  t0 = Date.now()
  await A.page.keyboard.press('Enter')
  await row(B.page, 'escrow', id).locator('[data-field=property_address]', { hasText: '79 Live Oak Rd' }).waitFor({ timeout: 1000 })
  const editedMs = Date.now() - t0
  await shot(B.page, '03-teammates-edited-in-B')

  // Delete.
  t0 = Date.now()
  await row(A.page, 'escrow', id).locator('[data-action=delete]').click()
  await row(A.page, 'escrow', id).waitFor({ state: 'detached', timeout: 2000 })
  await row(B.page, 'escrow', id).waitFor({ state: 'detached', timeout: 1000 })
  const deletedMs = Date.now() - t0
  await shot(B.page, '04-teammates-deleted-in-B')

  assert.equal(B.listGets('/api/escrows'), 1, `B fetched the escrow list ${B.listGets('/api/escrows')} times; events should patch it`)
  assert.equal(await rowByText(C.page, 'escrow', 'Live Oak').count(), 0, 'team 2 shows team 1\'s escrow')
  const seen = await C.page.evaluate(() => window.__seen)
  assert.deepEqual(seen.filter((s) => s.endsWith(` ${id}`)), [], 'team 2 received events of team 1\'s escrow')
  await shot(C.page, '05-other-team-sees-nothing')
  for (const p of [A, B, C]) assert.deepEqual(p.errors, [])
  console.log(`B saw the create after ${createdMs}ms, the edit after ${editedMs}ms, the delete after ${deletedMs}ms`)
  await Promise.all([A, B, C].map((p) => p.context.close()))
})
