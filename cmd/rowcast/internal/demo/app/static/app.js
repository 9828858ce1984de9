// The demo CRM page: five lists of the signed-in user's team kept live by
// rowcast (client.js + tanstack.js, no refetching), optimistic actions with
// rollback, writes that wait while the relay is unreachable, and AI task
// cards. Build-free: React and TanStack's query-core come from /vendor
// through the import map in index.html; h is React.createElement.
//
// Hooks for tests (README, "The demo app"): /?user=<id>;
// [data-testid=connection-status][data-status]; [data-testid=list-<entity>]
// holding [data-testid=row][data-id] with [data-field=<column>] cells and
// [data-action=<action>] buttons; [data-testid=ai-task][data-task-id]
// [data-status] with a [role=progressbar][aria-valuenow]; [data-testid=toast].

import React, { useCallback, useEffect, useMemo, useRef, useState, useSyncExternalStore } from 'react'
import { createRoot } from 'react-dom'
import { QueryClient, QueryObserver, MutationObserver, onlineManager } from '@tanstack/query-core'
import { connect } from '/client.js'
import { syncQueries, newRequestId } from '/tanstack.js'
import { useRowcastStatus, useRowcastEvent } from '/react.js'

const h = React.createElement

// --- session ---------------------------------------------------------------

const userId = new URLSearchParams(location.search).get('user') || '1'
let session = null // { token, exp, user }

async function getToken() {
  if (session && session.exp - Date.now() > 120_000) return session.token
  const res = await fetch(`/api/demo/token?user=${encodeURIComponent(userId)}`)
  const body = await res.json().catch(() => ({}))
  if (!res.ok) throw new Error(body.error || `token: HTTP ${res.status}`)
  session = { token: body.token, exp: Date.parse(body.expiresAt), user: body.user }
  return session.token
}

// Where an app plugs its error reporting: the CRM adds a Sentry breadcrumb
// per error and captures an exception after five failed attempts.
const connectionErrors = []
const rc = connect({
  url: '/ws',
  token: getToken,
  storageKey: `rowcast:demo:user:${userId}`,
  onError(err, { attempt }) {
    connectionErrors.push({ at: new Date().toISOString(), code: err.code, message: err.message, attempt })
    if (connectionErrors.length > 50) connectionErrors.shift()
    console.warn(`rowcast: ${err.message} (attempt ${attempt})`)
  },
})
window.rowcast = rc // for the console and the end-to-end tests

const queryClient = new QueryClient({
  defaultOptions: {
    // Lists load over REST even while the relay is unreachable; events keep
    // them current afterwards, so they never go stale by themselves.
    queries: { networkMode: 'always', staleTime: Infinity, refetchOnWindowFocus: false, retry: 1 },
    // One scope: writes made while the relay is unreachable wait, and are
    // sent in the order they were made when it returns.
    mutations: { scope: { id: 'crm' } },
  },
})
queryClient.mount()

const ENTITIES = {
  escrow: { key: ['escrows'], path: 'escrows', title: 'Escrows', noun: 'escrow' },
  listing: { key: ['listings'], path: 'listings', title: 'Listings', noun: 'listing' },
  client: { key: ['clients'], path: 'clients', title: 'Clients', noun: 'client' },
  appointment: { key: ['appointments'], path: 'appointments', title: 'Appointments', noun: 'appointment' },
  lead: { key: ['leads'], path: 'leads', title: 'Leads', noun: 'lead' },
}
const sync = syncQueries(
  rc,
  queryClient,
  Object.fromEntries(Object.entries(ENTITIES).map(([e, spec]) => [e, spec.key])),
  { onlineManager },
)

// --- REST ------------------------------------------------------------------

const failMode = createStore(false)

async function api(method, path, body, requestId) {
  const headers = { Authorization: `Bearer ${await getToken()}` }
  if (body !== undefined) headers['Content-Type'] = 'application/json'
  if (requestId) headers['X-Request-Id'] = requestId
  const url = method !== 'GET' && failMode.get() ? `${path}?fail=1` : path
  const res = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) })
  const out = await res.json().catch(() => ({}))
  if (!res.ok) throw new Error(out.error || `HTTP ${res.status}`)
  return out
}

// write sends one optimistic change: applied to the cache at once, confirmed
// by the answer and the relay's echo, undone alone (with a toast) on failure.
function write({ entity, change, method, path, body, label }) {
  const requestId = newRequestId()
  const observer = new MutationObserver(queryClient, {
    mutationFn: () => api(method, path, body, requestId),
    onMutate: () => sync.optimistic(entity, requestId, change),
    onSuccess: (row, _vars, op) => op?.confirm(row),
    onError: (err, _vars, op) => {
      op?.rollback()
      toasts.push({ kind: 'error', text: `Couldn't ${label}: ${err.message}` })
    },
  })
  return observer.mutate().catch(() => {})
}

// --- small stores ----------------------------------------------------------

function createStore(initial) {
  let value = initial
  const subs = new Set()
  return {
    get: () => value,
    set(v) {
      value = typeof v === 'function' ? v(value) : v
      for (const s of subs) s()
    },
    subscribe(fn) {
      subs.add(fn)
      return () => subs.delete(fn)
    },
  }
}

function useStore(store) {
  return useSyncExternalStore(store.subscribe, store.get)
}

const toastStore = createStore([])
let toastSeq = 0
const toasts = {
  push(t) {
    const id = ++toastSeq
    toastStore.set((list) => [...list, { ...t, id }])
    setTimeout(() => toasts.dismiss(id), 6000)
  },
  dismiss(id) {
    toastStore.set((list) => list.filter((t) => t.id !== id))
  },
}

function useQuery(key, path) {
  const observer = useMemo(
    () => new QueryObserver(queryClient, { queryKey: key, queryFn: () => api('GET', `/api/${path}`) }),
    [key.join('/'), path],
  )
  const subscribe = useCallback((notify) => observer.subscribe(notify), [observer])
  return useSyncExternalStore(subscribe, () => observer.getCurrentResult())
}

// --- formatting ------------------------------------------------------------

const money = new Intl.NumberFormat('en-US', { style: 'currency', currency: 'USD', maximumFractionDigits: 0 })
const fmtMoney = (v) => (v == null || v === '' ? '—' : money.format(Number(v)))
const fmtDate = (v) => (v ? new Date(v.length === 10 ? `${v}T00:00:00` : v).toLocaleDateString('en-US', { month: 'short', day: 'numeric', year: 'numeric' }) : '—')
const fmtDateTime = (v) => (v ? new Date(v).toLocaleString('en-US', { month: 'short', day: 'numeric', hour: 'numeric', minute: '2-digit' }) : '—')
const label = (s) => String(s ?? '').replace(/_/g, ' ')

// --- components ------------------------------------------------------------

const STATUS_TEXT = { connected: 'Connected', connecting: 'Connecting', reconnecting: 'Reconnecting', offline: 'Offline' }

function ConnectionBadge() {
  const status = useRowcastStatus(rc)
  const [, tick] = useState(0)
  useEffect(() => {
    if (status !== 'reconnecting') return undefined
    const t = setInterval(() => tick((n) => n + 1), 1000)
    return () => clearInterval(t)
  }, [status])
  const title =
    status === 'reconnecting'
      ? `Connection lost; attempt ${rc.attempt}. Changes you make are kept and sent when it returns.`
      : status === 'offline'
        ? 'Offline: changes you make are kept and sent when the connection returns.'
        : 'Live: changes by your team appear as they happen.'
  return h(
    'div',
    { className: `badge badge-${status}`, 'data-testid': 'connection-status', 'data-status': status, title, role: 'status' },
    h('span', { className: 'dot' }),
    STATUS_TEXT[status] ?? status,
  )
}

function UserSwitcher({ users }) {
  return h(
    'label',
    { className: 'user-switcher' },
    h('span', { className: 'sr-only' }, 'Signed in as'),
    h(
      'select',
      {
        'data-testid': 'user-switcher',
        value: userId,
        onChange: (e) => {
          location.search = `?user=${encodeURIComponent(e.target.value)}`
        },
      },
      users.map((u) => h('option', { key: u.id, value: u.id }, `${u.name} · ${u.teamName}`)),
    ),
  )
}

function FailToggle() {
  const on = useStore(failMode)
  return h(
    'label',
    { className: 'fail-toggle', title: 'Make every write fail after a moment, to watch optimistic changes roll back' },
    h('input', { type: 'checkbox', checked: on, 'data-testid': 'fail-toggle', onChange: (e) => failMode.set(e.target.checked) }),
    'Simulate failures',
  )
}

function AppBar({ users }) {
  const me = users.find((u) => u.id === userId)
  return h(
    'header',
    { className: 'appbar' },
    h('div', { className: 'brand' }, h('div', { className: 'logo' }, 'P'), h('div', null, h('strong', null, me?.teamName ?? 'CRM'), h('small', null, 'Real-estate CRM'))),
    h('div', { className: 'appbar-right' }, h(FailToggle), h(ConnectionBadge), h(UserSwitcher, { users })),
  )
}

function Field({ name, children, className }) {
  return h('span', { 'data-field': name, className: `field ${className ?? ''}` }, children)
}

function StatusPill({ value, field = 'status' }) {
  return h(Field, { name: field, className: `pill pill-${value}` }, label(value))
}

function EditableText({ entity, row, field, path, placeholder }) {
  const [editing, setEditing] = useState(false)
  const [text, setText] = useState(row[field] ?? '')
  const save = () => {
    setEditing(false)
    if (text === row[field] || text.trim() === '') return
    write({
      entity,
      change: { action: 'updated', id: row.id, changes: { [field]: text } },
      method: 'PATCH',
      path: `/api/${path}/${row.id}`,
      body: { [field]: text },
      label: `rename this ${ENTITIES[entity].noun}`,
    })
  }
  if (editing) {
    return h('input', {
      className: 'inline-edit',
      autoFocus: true,
      value: text,
      placeholder,
      'data-edit': field,
      onChange: (e) => setText(e.target.value),
      onBlur: save,
      onKeyDown: (e) => {
        if (e.key === 'Enter') save()
        if (e.key === 'Escape') setEditing(false)
      },
    })
  }
  return h(
    'button',
    {
      className: 'link title',
      title: 'Click to edit',
      'data-action': 'edit',
      onClick: () => {
        setText(row[field] ?? '')
        setEditing(true)
      },
    },
    h(Field, { name: field }, row[field] || placeholder),
  )
}

function StatusSelect({ entity, row, options, path, route }) {
  return h(
    'select',
    {
      className: `status-select pill-${row.status}`,
      value: row.status,
      'data-field': 'status',
      'aria-label': 'Status',
      onChange: (e) => {
        const status = e.target.value
        write({
          entity,
          change: { action: 'updated', id: row.id, changes: { status } },
          method: route ? 'POST' : 'PATCH',
          path: route ? `/api/${path}/${row.id}/${route}` : `/api/${path}/${row.id}`,
          body: { status },
          label: `change the status`,
        })
      },
    },
    options.map((o) => h('option', { key: o, value: o }, label(o))),
  )
}

function Actions({ children }) {
  return h('div', { className: 'actions' }, children)
}

function ActionButton({ action, onClick, children, danger }) {
  return h('button', { className: `btn-icon ${danger ? 'danger' : ''}`, 'data-action': action, title: children, onClick }, children)
}

function remove(entity, row) {
  const spec = ENTITIES[entity]
  return write({ entity, change: { action: 'deleted', id: row.id }, method: 'DELETE', path: `/api/${spec.path}/${row.id}`, label: `delete this ${spec.noun}` })
}

function addNote(entity, row) {
  const body = window.prompt(`Note on this ${ENTITIES[entity].noun}`)
  if (!body) return
  api('POST', `/api/${ENTITIES[entity].path}/${row.id}/notes`, { body }, newRequestId()).then(
    () => toasts.push({ kind: 'ok', text: 'Note added' }),
    (err) => toasts.push({ kind: 'error', text: `Couldn't add the note: ${err.message}` }),
  )
}

const ROWS = {
  escrow: (row) => [
    h('div', { className: 'main', key: 'm' }, h(EditableText, { entity: 'escrow', row, field: 'property_address', path: 'escrows' }),
      h('div', { className: 'sub' }, h(Field, { name: 'city' }, row.city), ', ', h(Field, { name: 'state' }, row.state), ' · closes ', h(Field, { name: 'closing_date' }, fmtDate(row.closing_date)))),
    h(Field, { name: 'purchase_price', className: 'num', key: 'p' }, fmtMoney(row.purchase_price)),
    h(StatusSelect, { key: 's', entity: 'escrow', row, path: 'escrows', options: ['open', 'pending', 'closed', 'cancelled'] }),
    h(Actions, { key: 'a' },
      h(ActionButton, { action: 'note', onClick: () => addNote('escrow', row) }, 'Note'),
      h(ActionButton, {
        action: 'archive',
        onClick: () => write({ entity: 'escrow', change: { action: 'updated', id: row.id, changes: { archived_at: new Date().toISOString() } },
          method: 'POST', path: `/api/escrows/${row.id}/archive`, label: 'archive this escrow' }),
      }, 'Archive'),
      h(ActionButton, { action: 'delete', danger: true, onClick: () => remove('escrow', row) }, 'Delete')),
  ],
  listing: (row) => [
    h('div', { className: 'main', key: 'm' }, h(EditableText, { entity: 'listing', row, field: 'street_address', path: 'listings' }),
      h('div', { className: 'sub' }, h(Field, { name: 'city' }, row.city), ' · ', h(Field, { name: 'bedrooms' }, row.bedrooms ?? '–'), ' bd · ', h(Field, { name: 'bathrooms' }, row.bathrooms ?? '–'), ' ba')),
    h(Field, { name: 'list_price', className: 'num', key: 'p' }, fmtMoney(row.list_price)),
    h(StatusSelect, { key: 's', entity: 'listing', row, path: 'listings', options: ['coming_soon', 'active', 'pending', 'sold', 'withdrawn'] }),
    h(Actions, { key: 'a' }, h(ActionButton, { action: 'delete', danger: true, onClick: () => remove('listing', row) }, 'Delete')),
  ],
  client: (row) => [
    h('div', { className: 'main', key: 'm' },
      h('div', { className: 'title-row' }, h(EditableText, { entity: 'client', row, field: 'first_name', path: 'clients' }), h(Field, { name: 'last_name', className: 'title' }, row.last_name)),
      h('div', { className: 'sub' }, h(Field, { name: 'email' }, row.email || 'no email'), ' · ', h(Field, { name: 'phone' }, row.phone || 'no phone'))),
    h(StatusPill, { key: 't', value: row.client_type, field: 'client_type' }),
    h(Actions, { key: 'a' }, h(ActionButton, { action: 'note', onClick: () => addNote('client', row) }, 'Note'),
      h(ActionButton, { action: 'delete', danger: true, onClick: () => remove('client', row) }, 'Delete')),
  ],
  appointment: (row) => [
    h('div', { className: 'main', key: 'm' }, h(EditableText, { entity: 'appointment', row, field: 'title', path: 'appointments' }),
      h('div', { className: 'sub' }, h(Field, { name: 'starts_at' }, fmtDateTime(row.starts_at)), row.location ? ' · ' : '', h(Field, { name: 'location' }, row.location ?? ''))),
    h(StatusPill, { key: 's', value: row.status }),
    h(Actions, { key: 'a' },
      row.status === 'scheduled'
        ? h(ActionButton, {
            action: 'complete',
            onClick: () => write({ entity: 'appointment', change: { action: 'updated', id: row.id, changes: { status: 'completed' } },
              method: 'POST', path: `/api/appointments/${row.id}/complete`, label: 'complete this appointment' }),
          }, 'Complete')
        : null,
      h(ActionButton, { action: 'delete', danger: true, onClick: () => remove('appointment', row) }, 'Delete')),
  ],
  lead: (row) => [
    h('div', { className: 'main', key: 'm' },
      h('div', { className: 'title-row' }, h(EditableText, { entity: 'lead', row, field: 'first_name', path: 'leads' }), h(Field, { name: 'last_name', className: 'title' }, row.last_name ?? '')),
      h('div', { className: 'sub' }, h(Field, { name: 'source' }, label(row.source)), ' · score ', h(Field, { name: 'score' }, row.score))),
    h(StatusSelect, { key: 's', entity: 'lead', row, path: 'leads', route: 'status', options: ['new', 'contacted', 'qualified', 'converted', 'lost'] }),
    h(Actions, { key: 'a' }, h(ActionButton, { action: 'note', onClick: () => addNote('lead', row) }, 'Note'),
      h(ActionButton, { action: 'delete', danger: true, onClick: () => remove('lead', row) }, 'Delete')),
  ],
}

// NEW describes each entity's create form: fields and a sample to start from.
const streets = ['Oak St', 'Maple Ave', 'Cedar Ln', 'Harbor Blvd', 'Sunset Dr', 'Pine Ct', 'Bay Rd']
const names = ['Maya', 'Noah', 'Liam', 'Zoe', 'Ivy', 'Omar', 'Lena', 'Theo']
const pick = (xs) => xs[Math.floor(Math.random() * xs.length)]
const NEW = {
  escrow: {
    defaults: { status: 'open' },
    fields: [['property_address', 'Address'], ['city', 'City'], ['state', 'State'], ['zip_code', 'ZIP'], ['purchase_price', 'Price', 'number']],
    sample: () => ({ property_address: `${100 + Math.floor(Math.random() * 900)} ${pick(streets)}`, city: 'Santa Monica', state: 'CA', zip_code: '90401', purchase_price: 450000 + 5000 * Math.floor(Math.random() * 100) }),
  },
  listing: {
    defaults: { status: 'active' },
    fields: [['street_address', 'Address'], ['city', 'City'], ['state', 'State'], ['zip_code', 'ZIP'], ['list_price', 'Price', 'number']],
    sample: () => ({ street_address: `${100 + Math.floor(Math.random() * 900)} ${pick(streets)}`, city: 'Pasadena', state: 'CA', zip_code: '91101', list_price: 600000 + 10000 * Math.floor(Math.random() * 50) }),
  },
  client: {
    defaults: { client_type: 'buyer' },
    fields: [['first_name', 'First name'], ['last_name', 'Last name'], ['email', 'Email']],
    sample: () => {
      const f = pick(names)
      return { first_name: f, last_name: pick(['Garcia', 'Chen', 'Okafor', 'Silva', 'Novak']), email: `${f.toLowerCase()}@example.com` }
    },
  },
  appointment: {
    defaults: { status: 'scheduled' },
    fields: [['title', 'Title'], ['location', 'Location'], ['starts_at', 'Starts', 'datetime-local']],
    sample: () => {
      const d = new Date(Date.now() + 86400000 * (1 + Math.floor(Math.random() * 6)))
      d.setHours(10 + Math.floor(Math.random() * 7), 0, 0, 0)
      const local = new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16)
      return { title: `Showing: ${pick(streets)}`, location: 'On site', starts_at: local }
    },
  },
  lead: {
    defaults: { status: 'new', score: 0 },
    fields: [['first_name', 'First name'], ['last_name', 'Last name'], ['source', 'Source']],
    sample: () => ({ first_name: pick(names), last_name: pick(['Kim', 'Silva', 'Chen']), source: pick(['website', 'referral', 'open_house']) }),
  },
}

function NewForm({ entity, onDone }) {
  const spec = NEW[entity]
  const [values, setValues] = useState(spec.sample)
  const submit = (e) => {
    e.preventDefault()
    const body = {}
    for (const [name, , type] of spec.fields) {
      const v = values[name]
      if (v === '' || v == null) continue
      body[name] = type === 'number' ? Number(v) : type === 'datetime-local' ? new Date(v).toISOString() : v
    }
    write({ entity, change: { action: 'created', row: { ...spec.defaults, ...body } }, method: 'POST', path: `/api/${ENTITIES[entity].path}`, body, label: `create the ${ENTITIES[entity].noun}` })
    onDone()
  }
  return h(
    'form',
    { className: 'new-form', 'data-testid': `new-${entity}`, onSubmit: submit },
    spec.fields.map(([name, text, type]) =>
      h('label', { key: name }, h('span', null, text),
        h('input', { name, type: type ?? 'text', value: values[name] ?? '', required: true, onChange: (e) => setValues({ ...values, [name]: e.target.value }) })),
    ),
    h('div', { className: 'form-actions' }, h('button', { type: 'button', className: 'btn ghost', onClick: onDone }, 'Cancel'), h('button', { type: 'submit', className: 'btn primary' }, 'Create')),
  )
}

function EntityList({ entity, wide }) {
  const spec = ENTITIES[entity]
  const q = useQuery(spec.key, spec.path)
  const [adding, setAdding] = useState(false)
  const rows = (q.data ?? []).filter((r) => !r.archived_at)
  return h(
    'section',
    { className: `card ${wide ? 'wide' : ''}`, 'data-testid': `list-${entity}` },
    h('div', { className: 'card-head' },
      h('h2', null, spec.title, h('span', { className: 'count' }, q.data ? rows.length : '')),
      h('button', { className: 'btn small', 'data-action': 'new', onClick: () => setAdding(!adding) }, adding ? 'Close' : `New ${spec.noun}`)),
    adding ? h(NewForm, { entity, onDone: () => setAdding(false) }) : null,
    q.status === 'pending'
      ? h('div', { className: 'empty' }, q.fetchStatus === 'fetching' ? 'Loading…' : 'Waiting for the connection…')
      : q.status === 'error'
        ? h('div', { className: 'empty error' }, `Couldn't load: ${q.error.message}`)
        : rows.length === 0
          ? h('div', { className: 'empty' }, `No ${spec.title.toLowerCase()} yet.`)
          : h('ul', { className: 'rows' }, rows.map((row) =>
              h('li', { key: String(row.id), className: `row ${row._requestId ? 'pending' : ''}`, 'data-testid': 'row', 'data-id': String(row.id) }, ROWS[entity](row)))),
  )
}

// --- AI tasks --------------------------------------------------------------

const TASK_TITLES = { create_escrow_from_address: 'Create escrow from address', import_leads_csv: 'Import leads from CSV' }

function useTasks() {
  const [tasks, setTasks] = useState([])
  const timers = useRef(new Map())
  const upsert = useCallback((id, patch) => {
    setTasks((list) => {
      const i = list.findIndex((t) => t.taskId === id)
      if (i < 0) return [{ taskId: id, progress: 0, status: 'running', ...patch }, ...list]
      const out = [...list]
      out[i] = { ...out[i], ...patch }
      return out
    })
  }, [])
  const dismiss = useCallback((id) => setTasks((list) => list.filter((t) => t.taskId !== id)), [])
  useRowcastEvent(rc, 'ai:task:started', (d) => upsert(d.taskId, { taskType: d.taskType, message: d.message, status: 'running', progress: 0 }))
  useRowcastEvent(rc, 'ai:task:progress', (d) => upsert(d.taskId, { progress: d.progress, message: d.message, status: 'running' }))
  useRowcastEvent(rc, 'ai:task:completed', (d) => {
    upsert(d.taskId, { progress: 100, message: d.message, status: 'completed' })
    clearTimeout(timers.current.get(d.taskId))
    timers.current.set(d.taskId, setTimeout(() => dismiss(d.taskId), 3000))
  })
  useRowcastEvent(rc, 'ai:task:failed', (d) => upsert(d.taskId, { error: d.error, status: 'failed' }))
  useEffect(() => () => timers.current.forEach((t) => clearTimeout(t)), [])
  return [tasks, dismiss]
}

function TaskCard({ task, onDismiss }) {
  const pct = Math.max(0, Math.min(100, Number(task.progress) || 0))
  return h(
    'div',
    { className: `task task-${task.status}`, 'data-testid': 'ai-task', 'data-task-id': task.taskId, 'data-status': task.status },
    h('div', { className: 'task-head' },
      h('strong', null, TASK_TITLES[task.taskType] ?? label(task.taskType ?? 'AI task')),
      h('span', { className: 'task-state' }, task.status === 'completed' ? 'Done' : task.status === 'failed' ? 'Failed' : `${pct}%`)),
    h('div', { className: 'bar', role: 'progressbar', 'aria-valuemin': 0, 'aria-valuemax': 100, 'aria-valuenow': pct, 'aria-label': 'Task progress' },
      h('div', { className: 'fill', style: { width: `${pct}%` } })),
    task.status === 'failed'
      ? h('div', { className: 'task-error', 'data-field': 'error' }, task.error || 'The task failed.',
          h('button', { className: 'link', onClick: () => onDismiss(task.taskId) }, 'Dismiss'))
      : h('div', { className: 'task-message', 'data-field': 'message' }, task.message || 'Starting…'),
  )
}

const SAMPLE_CSV = 'first_name,last_name,email,phone\nMaya,Garcia,maya@example.com,555-0101\nNoah,Chen,noah@example.com,555-0102\nZoe,Okafor,zoe@example.com,555-0103'

function Assistant({ onHide }) {
  const [tasks, dismiss] = useTasks()
  const [address, setAddress] = useState('1200 Ocean Ave, Santa Monica, CA 90401')
  const [price, setPrice] = useState('985000')
  const [csv, setCsv] = useState(SAMPLE_CSV)
  const start = (taskType, params) =>
    api('POST', '/api/ai-tasks', { taskType, params }).catch((err) => toasts.push({ kind: 'error', text: `Couldn't start the task: ${err.message}` }))
  return h(
    'aside',
    { className: 'card assistant', 'data-testid': 'assistant' },
    h('div', { className: 'card-head' }, h('h2', null, 'AI assistant'),
      h('button', { className: 'btn small ghost', 'data-action': 'hide-assistant', onClick: onHide }, 'Hide')),
    h('form', { className: 'ai-form', 'data-testid': 'ai-escrow', onSubmit: (e) => { e.preventDefault(); start('create_escrow_from_address', { address, price: Number(price) }) } },
      h('label', null, h('span', null, 'Create escrow from address'), h('input', { name: 'address', value: address, onChange: (e) => setAddress(e.target.value) })),
      h('div', { className: 'inline' }, h('input', { name: 'price', type: 'number', value: price, 'aria-label': 'Price', onChange: (e) => setPrice(e.target.value) }),
        h('button', { className: 'btn primary', type: 'submit' }, 'Create escrow'))),
    h('form', { className: 'ai-form', 'data-testid': 'ai-leads', onSubmit: (e) => { e.preventDefault(); start('import_leads_csv', { csv }) } },
      h('label', null, h('span', null, 'Import leads CSV'), h('textarea', { name: 'csv', rows: 4, value: csv, onChange: (e) => setCsv(e.target.value) })),
      h('button', { className: 'btn primary', type: 'submit' }, 'Import leads')),
    h('div', { className: 'tasks' }, tasks.length === 0 ? h('div', { className: 'empty small' }, 'Tasks you start show their progress here.') : tasks.map((t) => h(TaskCard, { key: t.taskId, task: t, onDismiss: dismiss }))),
  )
}

function Toasts() {
  const list = useStore(toastStore)
  return h('div', { className: 'toasts', 'aria-live': 'polite' },
    list.map((t) => h('div', { key: t.id, className: `toast toast-${t.kind}`, 'data-testid': 'toast', role: t.kind === 'error' ? 'alert' : 'status' },
      t.text, h('button', { className: 'link', 'aria-label': 'Dismiss', onClick: () => toasts.dismiss(t.id) }, '×'))))
}

function App() {
  const [users, setUsers] = useState([])
  const [showAssistant, setShowAssistant] = useState(true)
  useEffect(() => {
    fetch('/api/demo/users').then((r) => r.json()).then(setUsers, () => {})
  }, [])
  return h(
    React.Fragment,
    null,
    h(AppBar, { users }),
    h('main', { className: 'layout' },
      h('div', { className: 'lists' },
        h(EntityList, { entity: 'escrow', wide: true }),
        h(EntityList, { entity: 'lead' }),
        h(EntityList, { entity: 'appointment' }),
        h(EntityList, { entity: 'listing' }),
        h(EntityList, { entity: 'client' })),
      showAssistant
        ? h(Assistant, { onHide: () => setShowAssistant(false) })
        : h('aside', { className: 'assistant-collapsed' },
            h('button', { className: 'btn', 'data-action': 'show-assistant', onClick: () => setShowAssistant(true) }, 'Show AI assistant'))),
    h(Toasts),
  )
}

createRoot(document.getElementById('root')).render(h(App))
