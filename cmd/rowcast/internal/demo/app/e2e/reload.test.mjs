// Step 6: a reload in the middle of a stream of writes resumes from the
// stored position and misses nothing.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { launch, openApp, connected, sql, shot, waitUntil } from './lib.mjs'

let browser
before(async () => (browser = await launch()))
after(() => browser?.close())

test('a reload mid-stream resumes from the stored position', async () => {
  const B = await openApp(browser, '2')
  const n = 60
  const writes = (async () => {
    for (let i = 1; i <= n; i++) {
      await sql(`select rowcast.set_actor('1'); insert into leads (team_id, first_name, last_name, source) values (1, 'Stream', 'Lead ${i}', 'import')`)
      await new Promise((r) => setTimeout(r, 25))
    }
  })()
  await waitUntil(() => B.page.locator('[data-testid=list-lead] [data-testid=row]').count().then((c) => c >= 10), 10000, '10 streamed leads')
  const stored = await B.page.evaluate(() => sessionStorage.getItem('rowcast:demo:user:2'))
  assert.ok(stored, 'no position in sessionStorage')
  await B.page.reload()
  await connected(B.page)
  await writes
  const rows = B.page.locator('[data-testid=list-lead] [data-testid=row]', { hasText: 'Stream' })
  await waitUntil(() => rows.count().then((c) => c === n), 5000, `${n} streamed leads after the reload`)
  const resumedWith = new URL(B.sockets.at(-1)).searchParams.get('since')
  assert.ok(resumedWith, `the reloaded page connected without since: ${B.sockets.at(-1)}`)
  await shot(B.page, '15-reload-resumed')
  assert.deepEqual(B.errors, [])
  await B.context.close()
})
