// Step 5: an AI task's card appears, its bar advances, it completes and
// goes three seconds later; a failing task shows its error.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { launch, openApp, rowByText, shot } from './lib.mjs'

let browser
before(async () => (browser = await launch()))
after(() => browser?.close())

// watchTasks records every card's status and progress as the page renders them.
async function watchTasks(page) {
  await page.evaluate(() => {
    window.__cards = {}
    const seen = () => {
      for (const el of document.querySelectorAll('[data-testid=ai-task]')) {
        const id = el.dataset.taskId
        const c = (window.__cards[id] ??= { statuses: [], progress: [], goneAt: null, completedAt: null })
        const status = el.dataset.status
        if (c.statuses.at(-1) !== status) c.statuses.push(status)
        if (status === 'completed' && !c.completedAt) c.completedAt = performance.now()
        const p = Number(el.querySelector('[role=progressbar]').getAttribute('aria-valuenow'))
        if (c.progress.at(-1) !== p) c.progress.push(p)
      }
      for (const [id, c] of Object.entries(window.__cards)) {
        if (!c.goneAt && !document.querySelector(`[data-testid=ai-task][data-task-id="${id}"]`)) c.goneAt = performance.now()
      }
    }
    new MutationObserver(seen).observe(document.body, { subtree: true, childList: true, attributes: true })
  })
}

test('a task card fills, completes and disappears after three seconds', async () => {
  const A = await openApp(browser, '1')
  await watchTasks(A.page)
  await A.page.fill('[data-testid=ai-escrow] input[name=address]', '480 Sunset Dr, Malibu, CA 90265')
  await A.page.click('[data-testid=ai-escrow] button[type=submit]')
  const card = A.page.locator('[data-testid=ai-task]')
  await card.first().waitFor({ timeout: 3000 })
  await A.page.locator('[data-testid=ai-task] [role=progressbar]:not([aria-valuenow="0"])').first().waitFor({ timeout: 5000 })
  await shot(A.page, '12-ai-task-progress')
  await A.page.locator('[data-testid=ai-task][data-status=completed]').waitFor({ timeout: 15000 })
  await shot(A.page, '13-ai-task-completed')
  await card.first().waitFor({ state: 'detached', timeout: 6000 })
  const cards = Object.values(await A.page.evaluate(() => window.__cards))
  assert.equal(cards.length, 1)
  const c = cards[0]
  assert.deepEqual(c.statuses, ['running', 'completed'])
  assert.ok(c.progress.some((p) => p > 0 && p < 100), `no progress between 0 and 100: ${c.progress}`)
  assert.deepEqual([...c.progress].sort((a, b) => a - b), c.progress, `progress went back: ${c.progress}`)
  const shown = c.goneAt - c.completedAt
  assert.ok(shown >= 2800 && shown <= 4500, `the completed card stayed ${Math.round(shown)}ms, want about 3000`)
  await rowByText(A.page, 'escrow', '480 Sunset Dr').waitFor({ timeout: 2000 })
  assert.deepEqual(A.errors, [])
  await A.context.close()
})

test('a failing task shows its error and stays', async () => {
  const A = await openApp(browser, '1')
  await A.page.fill('[data-testid=ai-escrow] input[name=address]', 'somewhere nice')
  await A.page.click('[data-testid=ai-escrow] button[type=submit]')
  const failed = A.page.locator('[data-testid=ai-task][data-status=failed]')
  await failed.waitFor({ timeout: 15000 })
  const text = await failed.locator('[data-field=error]').innerText()
  assert.ok(text.trim().length > 5, `no error text: ${text}`)
  await shot(A.page, '14-ai-task-failed')
  await A.page.waitForTimeout(3500)
  assert.equal(await failed.count(), 1, 'a failed card went away by itself')
  await A.context.close()
})
