import { describe, expect, it } from 'vitest'
import { type DevicelabApi, install } from '../src/index'
import { fts5Query, likePattern } from '../src/probes/cache'
import { utcText } from '../src/probes/cache_sync'
import type { LocalSqlite } from '../src/sqlite'
import { type SqlJs, sqlJs } from './sqljs'

type Row = Record<string, unknown>

// A's data as the server holds it: c1 has 120 messages, c2 10, c3 none. Timestamps in
// PostgreSQL's JSON form (fraction trimmed of zeros), so only a fixed-width form sorts.
function backend(): { conversations: Row[]; messages: Row[] } {
  const messages: Row[] = []
  const at = (i: number) => {
    const ms = Date.UTC(2025, 11, 1) + i * 1000 + (i % 7) * 10
    const base = new Date(ms).toISOString().slice(0, 19)
    const fraction = String((i % 7) * 10_000 + (i % 3)).padStart(6, '0').replace(/0+$/, '')
    return `${base}${fraction ? `.${fraction}` : ''}+00:00`
  }
  for (let i = 0; i < 130; i += 1) {
    const conversation = i % 13 === 0 ? 'c2' : 'c1'
    const content = i === 64 ? 'deal: 100% sure_thing' : `message ${i} about ${i % 2 ? 'lunch' : 'work'}`
    messages.push({ id: `m${String(i).padStart(3, '0')}`, conversation_id: conversation,
      sender_id: 'a', content, type: 'text', created_at: at(i) })
  }
  const last = (c: string) => messages.filter((m) => m.conversation_id === c).at(-1)?.created_at ?? null
  const conversations = ['c1', 'c2', 'c3'].map((id) => ({ id, type: 'direct', name: null,
    participants: ['a', 'b'], created_at: at(0), last_message_at: last(id) }))
  return { conversations, messages }
}

/** The parts of supabase-js the cache probe calls: from(table).select().order().range(). */
function client(tables: Record<string, Row[]>, calls: string[]): unknown {
  const from = (table: string) => {
    const orders: Array<[string, boolean]> = []
    const builder = {
      select: () => builder,
      is: () => builder,
      order: (column: string, options?: { ascending?: boolean }) => {
        orders.push([column, options?.ascending ?? true])
        return builder
      },
      range: (start: number, end: number) => {
        calls.push(`${table} ${start}-${end}`)
        const rows = [...(tables[table] ?? [])].sort((x, y) => {
          for (const [column, ascending] of orders) {
            const [p, q] = [String(x[column] ?? ''), String(y[column] ?? '')]
            if (p !== q) return (p < q ? -1 : 1) * (ascending ? 1 : -1)
          }
          return 0
        })
        return Promise.resolve({ data: rows.slice(start, end + 1), error: null })
      },
    }
    return builder
  }
  return {
    auth: {
      signInWithPassword: async () => ({ data: { user: { id: 'a' } }, error: null }),
      signOut: async () => ({ error: null }),
    },
    removeAllChannels: async () => [],
    from,
  }
}

const CONFIG = { supabaseUrl: 'http://127.0.0.1:9', anonKey: 'k', users: [{ email: 'a', password: 'p' }] }

async function prepared(params: Record<string, unknown> = {}, sqlite?: LocalSqlite) {
  const data = backend()
  const calls: string[] = []
  const db: SqlJs = (sqlite as SqlJs | undefined) ?? (await sqlJs())
  const api: DevicelabApi = install({}, {
    createClient: () => client({ conversations: data.conversations, messages: data.messages }, calls) as never,
    sqlite: db,
  })
  await api.configure(CONFIG)
  const sync = await api.run('local_cache.prepare', { pageSize: 50, ...params })
  return { api, data, calls, sync, db }
}

describe('local_cache.prepare', () => {
  it('syncs A\'s conversations and newest messages in pages into indexed SQLite', async () => {
    const { sync, calls } = await prepared({ messages: 100 })
    expect(calls).toEqual(['conversations 0-49', 'messages 0-49', 'messages 50-99'])
    expect(sync.evidence).toMatchObject({ conversations: 3, messages: 100, messages_limit: 100,
      fullest_conversation_id: 'c1', engine: 'sql.js (vitest)' })
    expect(sync.evidence.indexes).toEqual(expect.arrayContaining([
      'idx_local_conversations_last_message', 'idx_local_messages_conversation_created']))
    expect(String(sync.evidence.sqlite_version)).toMatch(/^3\.\d+\.\d+$/)
    expect(sync.evidence.sync_ms as number).toBeGreaterThanOrEqual(0)
  })

  it('falls back to the content index and LIKE where SQLite has no FTS5, and says so', async () => {
    const { sync } = await prepared()
    // sql.js is built without FTS5 (as is jeep-sqlite on the web).
    expect(sync.evidence.search).toBe('like')
    expect(String(sync.evidence.search_how)).toMatch(/no FTS5: .*fts5/)
    expect(sync.evidence.indexes).toContain('idx_local_messages_search')
  })

  it('starts from an empty cache each time and closes the previous connection', async () => {
    const { api, db } = await prepared()
    const again = await api.run('local_cache.prepare', { pageSize: 1000 })
    expect(again.evidence).toMatchObject({ messages: 130, conversations: 3 })
    expect(db.opened.map((o) => o.closed)).toEqual([true, false])
    await api.reset()
    expect(db.opened.map((o) => o.closed)).toEqual([true, true])
    await expect(api.run('local_cache.query_50')).rejects.toThrow(/not configured/)
  })

  it('needs a SQLite, and the query probes need prepare', async () => {
    const api = install({}, { createClient: () => client({}, []) as never })
    await api.configure(CONFIG)
    await expect(api.run('local_cache.prepare')).rejects.toThrow(/no local SQLite/)
    await expect(api.run('local_cache.search')).rejects.toThrow(/run local_cache.prepare first/)
  })
})

describe('local cache queries', () => {
  it('query_50: the 50 newest messages of the fullest conversation, newest first', async () => {
    const { api, data } = await prepared()
    const result = await api.run('local_cache.query_50', { count: 3, intervalMs: 0, returnRows: true })
    expect(result.samples).toHaveLength(3)
    expect(result.unit).toBe('ms')
    const wanted = data.messages.filter((m) => m.conversation_id === 'c1').reverse().slice(0, 50)
    const returned = result.evidence.returned as Row[]
    expect(returned.map((r) => r.id)).toEqual(wanted.map((m) => m.id))
    expect(result.evidence).toMatchObject({ conversation_id: 'c1', rows: 50, newest_first: true })
    expect((result.evidence.plan as string[]).join(' ')).toMatch(/idx_local_messages_conversation_created/)
    expect(result.evidence.cold_ms).not.toBeNull()
  })

  it('search: finds what is cached, nothing for what is not, % and _ taken literally', async () => {
    const { api } = await prepared()
    const result = await api.run('local_cache.search', {
      terms: ['lunch', 'no-such-word', '100% sure_', '0%s'], count: 4, intervalMs: 0 })
    expect(result.samples).toHaveLength(4)
    expect(result.evidence.hits).toEqual({ lunch: 50, 'no-such-word': 0, '100% sure_': 1, '0%s': 0 })
    expect(result.evidence.search).toBe('like')
  })

  it('conversations: up to 50 by last_message_at, each with its newest message', async () => {
    const { api, data } = await prepared()
    const result = await api.run('local_cache.conversations', { count: 2, intervalMs: 0, returnRows: true })
    expect(result.evidence).toMatchObject({ rows: 3, with_last_message: 2, ordered: true })
    const returned = result.evidence.returned as Row[]
    expect(returned.map((r) => r.id)).toEqual(['c1', 'c2', 'c3'])
    const newest = (c: string) => data.messages.filter((m) => m.conversation_id === c).at(-1)?.id
    expect(returned.map((r) => r.last_message_id)).toEqual([newest('c1'), newest('c2'), null])
    expect((result.evidence.plan as string[]).join(' ')).toMatch(/idx_local_conversations_last_message/)
  })
})

describe('helpers', () => {
  it('writes timestamps in one width, in UTC, to the microsecond', () => {
    expect(utcText('2025-12-01T10:00:00+00:00')).toBe('2025-12-01T10:00:00.000000Z')
    expect(utcText('2025-12-01T10:00:00.12+00:00')).toBe('2025-12-01T10:00:00.120000Z')
    expect(utcText('2025-12-01 12:00:00.123456+02')).toBe('2025-12-01T10:00:00.123456Z')
    expect(utcText(null)).toBeNull()
    expect(() => utcText('yesterday')).toThrow(/not a timestamp/)
  })

  it('quotes FTS5 words and escapes LIKE patterns', () => {
    expect(fts5Query(' test  "query" ')).toBe('"test" """query"""')
    expect(likePattern('50%_off\\')).toBe('%50\\%\\_off\\\\%')
  })
})
