// memory_100_conversations / memory_1000_messages: the data a screen loads, kept by the
// app as its state and rendered into the DOM. The heap itself is read from outside the
// page (devicelab: CDP Performance.getMetrics, JSHeapUsedSize) before and after.
import type { Probe, ProbeContext, SignedInUser } from '../types'
import { errorText, num, round, str } from '../util'

function userA(ctx: ProbeContext): SignedInUser {
  const [a] = ctx.users
  if (!a) throw new Error('no signed-in user: call configure() first')
  return a
}

function render(rows: Array<Record<string, unknown>>, field: string, testid: string): number {
  if (typeof document === 'undefined') return 0
  const list = document.createElement('ul')
  list.dataset.testid = testid
  for (const row of rows) {
    const item = document.createElement('li')
    item.textContent = String(row[field] ?? '')
    list.appendChild(item)
  }
  document.body.appendChild(list)
  return list.childElementCount
}

/** Loads ``count`` conversations of A (in pages of 50, as the list scrolls) and keeps them. */
export const loadConversations: Probe = async (ctx, params) => {
  const count = num(params, 'count', 100)
  const a = userA(ctx)
  const rows: Array<Record<string, unknown>> = []
  const started = ctx.now()
  while (rows.length < count) {
    const from = rows.length
    const to = Math.min(count, from + 50) - 1
    const { data, error } = await a.client
      .from('conversation_list')
      .select('*')
      .order('last_message_at', { ascending: false })
      .range(from, to)
    if (error) throw new Error(`conversation_list failed: ${errorText(error)}`)
    rows.push(...(data ?? []))
    if (!data || data.length < to - from + 1) break
  }
  ctx.retained.push(rows)
  const rendered = render(rows, 'last_message_content', 'conversation-list')
  return { samples: [], unit: 'MB', evidence: { loaded: rows.length, rendered, load_ms: round(ctx.now() - started) } }
}

/**
 * Loads ``count`` messages of one conversation (pages of 100, newest first) and keeps
 * them, as user number ``user`` (1 = A, 2 = B: whoever is in that conversation).
 */
export const loadMessages: Probe = async (ctx, params) => {
  const count = num(params, 'count', 1000)
  const conversationId = str(params, 'conversationId')
  const index = num(params, 'user', 1)
  const a = ctx.users[index - 1]
  if (!a) throw new Error(`no signed-in user number ${index}`)
  const rows: Array<Record<string, unknown>> = []
  const started = ctx.now()
  while (rows.length < count) {
    const from = rows.length
    const to = Math.min(count, from + 100) - 1
    const { data, error } = await a.client
      .from('messages')
      .select('*')
      .eq('conversation_id', conversationId)
      .order('created_at', { ascending: false })
      .range(from, to)
    if (error) throw new Error(`messages failed: ${errorText(error)}`)
    rows.push(...(data ?? []))
    if (!data || data.length < to - from + 1) break
  }
  ctx.retained.push(rows)
  const rendered = render(rows, 'content', 'message-list')
  return { samples: [], unit: 'MB', evidence: { loaded: rows.length, rendered, load_ms: round(ctx.now() - started) } }
}

/** Drops what the memory probes kept (and their DOM), so the next baseline is clean. */
export const releaseRetained: Probe = async (ctx) => {
  const released = ctx.retained.length
  ctx.retained.length = 0
  if (typeof document !== 'undefined') {
    for (const node of document.querySelectorAll('[data-testid$="-list"]')) node.remove()
  }
  return { samples: [], unit: 'MB', evidence: { released } }
}
