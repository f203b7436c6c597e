// local_cache_*: the app's local SQLite cache (story 5, "Local SQLite Queries").
//
// local_cache.prepare syncs user A's conversations and up to ``messages`` of A's newest
// messages (not deleted) from Supabase (supabase-js, RLS decides what A sees) into a local SQLite
// database with the story's indexes; the three query probes then time the cache:
//   local_cache.query_50       the 50 newest messages of one conversation   (< 50 ms)
//   local_cache.search         search the cached messages                   (< 200 ms)
//   local_cache.conversations  50 conversations with their last message    (< 100 ms)
// Each query probe makes one more call than ``count``: the first (statement compiled,
// pages read from disk into SQLite's cache) is reported as ``cold_ms``, not as a sample.
import type { LocalDatabase } from '../sqlite'
import type { Params, Probe, ProbeContext, SignedInUser } from '../types'
import { errorText, num, round, str } from '../util'
import { CONVERSATION_COLUMNS, MESSAGE_COLUMNS, type Row, fetchPages, utcText } from './cache_sync'

const DB_NAME = 'devicelab_cache'
const STATE_KEY = 'local_cache'

/** What local_cache.prepare leaves for the query probes (kept in ctx.state). */
interface Cache {
  db: LocalDatabase
  search: 'fts5' | 'like'
  conversationId: string | null
  evidence: Record<string, unknown>
}

// The story's indexes (section 5), plus one on the conversation list's order: without it
// "50 conversations by last_message_at" sorts the whole table on every load.
const SCHEMA = `
DROP TABLE IF EXISTS local_messages_fts;
DROP TABLE IF EXISTS local_messages;
DROP TABLE IF EXISTS local_conversations;
CREATE TABLE local_conversations (
  id TEXT PRIMARY KEY, type TEXT, name TEXT, participants TEXT,
  created_at TEXT, last_message_at TEXT);
CREATE TABLE local_messages (
  id TEXT PRIMARY KEY, conversation_id TEXT NOT NULL, sender_id TEXT, content TEXT,
  type TEXT, created_at TEXT NOT NULL);
CREATE INDEX idx_local_messages_conversation_created
  ON local_messages(conversation_id, created_at DESC);
CREATE INDEX idx_local_conversations_last_message
  ON local_conversations(last_message_at DESC);`

// An external-content FTS5 table: the text stays in local_messages, FTS5 keeps the index.
const FTS5 = `CREATE VIRTUAL TABLE local_messages_fts USING fts5(
  content, content='local_messages', content_rowid='rowid')`
const LIKE_INDEX = 'CREATE INDEX idx_local_messages_search ON local_messages(content)'

const QUERY_50 = `SELECT id, conversation_id, sender_id, content, type, created_at
FROM local_messages WHERE conversation_id = ? ORDER BY created_at DESC LIMIT ?`

const SEARCH_FTS5 = `SELECT m.id, m.conversation_id, m.content, m.created_at
FROM local_messages_fts f JOIN local_messages m ON m.rowid = f.rowid
WHERE local_messages_fts MATCH ? ORDER BY m.created_at DESC LIMIT ?`
const SEARCH_LIKE = `SELECT id, conversation_id, content, created_at FROM local_messages
WHERE content LIKE ? ESCAPE '\\' ORDER BY created_at DESC LIMIT ?`

// The last message through the (conversation_id, created_at DESC) index: one index probe
// per conversation shown, not a scan of the messages.
const CONVERSATIONS = `SELECT c.id, c.type, c.name, c.last_message_at,
  m.id AS last_message_id, m.content AS last_message_content,
  m.sender_id AS last_message_sender_id, m.created_at AS last_message_created_at
FROM (SELECT id, type, name, last_message_at FROM local_conversations
      ORDER BY last_message_at DESC LIMIT ?) AS c
LEFT JOIN local_messages AS m ON m.rowid = (
  SELECT rowid FROM local_messages WHERE conversation_id = c.id
  ORDER BY created_at DESC LIMIT 1)
ORDER BY c.last_message_at DESC`

function userA(ctx: ProbeContext): SignedInUser {
  const [a] = ctx.users
  if (!a) throw new Error('no signed-in user: call configure() first')
  return a
}

function cacheOf(ctx: ProbeContext): Cache {
  const cache = ctx.state.get(STATE_KEY) as Cache | undefined
  if (!cache) throw new Error('the local cache is not prepared: run local_cache.prepare first')
  return cache
}

/** Closes the cache's connection, if one is open (prepare and reset() call it). A close
 * that fails is dropped: the connection is abandoned either way, and open() of the next
 * prepare closes a connection of the same name that is still there. */
export async function closeCache(ctx: ProbeContext): Promise<void> {
  const cache = ctx.state.get(STATE_KEY) as Cache | undefined
  ctx.state.delete(STATE_KEY)
  if (cache) await cache.db.close().catch(() => undefined)
}

/** An FTS5 query matching every word of ``term`` (each quoted: no FTS5 syntax leaks in). */
export function fts5Query(term: string): string {
  const words = term.split(/\s+/).filter((w) => w.length > 0)
  return words.map((w) => `"${w.replaceAll('"', '""')}"`).join(' ')
}

/** A LIKE pattern matching ``term`` anywhere, its own % and _ taken literally. */
export function likePattern(term: string): string {
  return `%${term.replace(/[\\%_]/g, (c) => `\\${c}`)}%`
}

async function plan(db: LocalDatabase, sql: string, values: unknown[]): Promise<string[]> {
  try {
    const rows = await db.query(`EXPLAIN QUERY PLAN ${sql}`, values)
    return rows.map((r) => String(r.detail ?? ''))
  } catch (error) {
    return [`no plan: ${errorText(error)}`]
  }
}

async function scalar(db: LocalDatabase, sql: string): Promise<unknown> {
  const [row] = await db.query(sql)
  return row ? Object.values(row)[0] : null
}

/**
 * Syncs A's conversations and up to ``messages`` of A's newest messages into the local
 * SQLite (tables dropped and made again: each run starts from an empty cache).
 */
export const cachePrepare: Probe = async (ctx, params) => {
  const limit = num(params, 'messages', 5000)
  const pageSize = num(params, 'pageSize', 1000)
  const a = userA(ctx)
  if (!ctx.sqlite) throw new Error('this build has no local SQLite (Dependencies.sqlite)')
  await closeCache(ctx)
  const started = ctx.now()
  const conversations = await fetchPages(
    (from, to) => a.client.from('conversations').select(CONVERSATION_COLUMNS.join(','))
      .order('last_message_at', { ascending: false }).order('id').range(from, to),
    pageSize, Number.POSITIVE_INFINITY, 'conversations')
  const messages = await fetchPages(
    (from, to) => a.client.from('messages').select(MESSAGE_COLUMNS.join(','))
      .is('deleted_at', null)
      .order('created_at', { ascending: false }).order('id', { ascending: false })
      .range(from, to),
    pageSize, limit, 'messages')
  const fetched = ctx.now()
  // Opening is timed apart: on the web it also loads SQLite itself (sql.js WASM).
  const db = await ctx.sqlite.open(DB_NAME)
  const opened = ctx.now()
  try {
    await db.execute(SCHEMA)
    let search: Cache['search'] = 'fts5'
    let ftsError = ''
    try {
      await db.execute(FTS5)
    } catch (error) {
      // This SQLite build has no FTS5 (sql.js under jeep-sqlite; some native builds): the story's
      // other option, an index on content, and LIKE.
      search = 'like'
      ftsError = errorText(error)
      await db.execute(LIKE_INDEX)
    }
    await db.executeMany(
      `INSERT INTO local_conversations (${CONVERSATION_COLUMNS.join(', ')}) VALUES (?, ?, ?, ?, ?, ?)`,
      conversations.map((c) => [c.id, c.type, c.name, JSON.stringify(c.participants ?? []),
        utcText(c.created_at), utcText(c.last_message_at)]))
    await db.executeMany(
      `INSERT INTO local_messages (${MESSAGE_COLUMNS.join(', ')}) VALUES (?, ?, ?, ?, ?, ?)`,
      messages.map((m) => [m.id, m.conversation_id, m.sender_id, m.content, m.type,
        utcText(m.created_at)]))
    if (search === 'fts5') {
      await db.execute("INSERT INTO local_messages_fts(local_messages_fts) VALUES('rebuild')")
    }
    const written = ctx.now()
    const [fullest] = await db.query(`SELECT conversation_id, count(*) AS n FROM local_messages
      GROUP BY conversation_id ORDER BY n DESC, conversation_id LIMIT 1`)
    const evidence = {
      engine: ctx.sqlite.engine,
      sqlite_version: String(await scalar(db, 'SELECT sqlite_version()')),
      search,
      search_how: search === 'fts5'
        ? 'FTS5 virtual table local_messages_fts (external content), MATCH'
        : `idx_local_messages_search ON local_messages(content) + LIKE '%term%', which the ` +
          `index cannot serve (a leading %: SQLite scans) (no FTS5: ${ftsError})`,
      conversations: Number(await scalar(db, 'SELECT count(*) FROM local_conversations')),
      messages: Number(await scalar(db, 'SELECT count(*) FROM local_messages')),
      messages_limit: limit,
      fetch_ms: round(fetched - started),
      open_ms: round(opened - fetched),
      write_ms: round(written - opened),
      sync_ms: round(fetched - started + (written - opened)),
      indexes: (await db.query(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE 'idx_local_%' ORDER BY name",
      )).map((r) => String(r.name)),
    }
    const conversationId = fullest ? String(fullest.conversation_id) : null
    ctx.state.set(STATE_KEY, { db, search, conversationId, evidence } satisfies Cache)
    return { samples: [], unit: 'ms', evidence: { ...evidence, fullest_conversation_id: conversationId,
      fullest_conversation_messages: fullest ? Number(fullest.n) : 0 } }
  } catch (error) {
    await db.close().catch(() => undefined)
    throw error
  }
}

/** Runs ``query(i)`` count + 1 times; the first call is the cold one (not a sample). */
async function timed(
  ctx: ProbeContext,
  params: Params,
  query: (i: number) => Promise<Row[]>,
): Promise<{ samples: number[]; cold: number | null; last: Row[] }> {
  const count = num(params, 'count', 10)
  const intervalMs = num(params, 'intervalMs', 10)
  const samples: number[] = []
  let last: Row[] = []
  for (let i = 0; i <= count; i += 1) {
    const started = ctx.now()
    last = await query(i)
    samples.push(round(ctx.now() - started))
    await ctx.sleep(intervalMs)
  }
  return { samples, cold: samples.shift() ?? null, last }
}

const summary = (rows: Row[]) => rows.map((r) => ({ id: r.id, created_at: r.created_at }))

/** The ``limit`` (50) newest cached messages of one conversation (A's fullest by default). */
export const cacheQuery50: Probe = async (ctx, params) => {
  const cache = cacheOf(ctx)
  const limit = num(params, 'limit', 50)
  const conversationId = str(params, 'conversationId', cache.conversationId ?? '')
  if (!conversationId) throw new Error('the local cache holds no messages')
  const run = await timed(ctx, params, () => cache.db.query(QUERY_50, [conversationId, limit]))
  const times = run.last.map((r) => String(r.created_at))
  return {
    samples: run.samples,
    unit: 'ms',
    evidence: {
      conversation_id: conversationId,
      rows: run.last.length,
      newest_first: times.every((t, i) => i === 0 || (times[i - 1] as string) >= t),
      plan: await plan(cache.db, QUERY_50, [conversationId, limit]),
      cold_ms: run.cold,
      ...(params.returnRows === true ? { returned: summary(run.last) } : {}),
    },
  }
}

/** Searches the cached messages for each term in turn (50 newest matches). */
export const cacheSearch: Probe = async (ctx, params) => {
  const cache = cacheOf(ctx)
  const limit = num(params, 'limit', 50)
  const raw = params.terms
  const terms = Array.isArray(raw) && raw.length > 0 ? raw.map(String) : ['test query']
  const sql = cache.search === 'fts5' ? SEARCH_FTS5 : SEARCH_LIKE
  const bind = (term: string) => [cache.search === 'fts5' ? fts5Query(term) : likePattern(term), limit]
  const hits: Record<string, number> = {}
  const run = await timed(ctx, params, async (i) => {
    const term = terms[i % terms.length] as string
    const rows = await cache.db.query(sql, bind(term))
    hits[term] = rows.length
    return rows
  })
  return {
    samples: run.samples,
    unit: 'ms',
    evidence: {
      search: cache.search,
      search_how: cache.evidence.search_how,
      hits,
      plan: await plan(cache.db, sql, bind(terms[0] as string)),
      cold_ms: run.cold,
    },
  }
}

/** The ``limit`` (50) most recent cached conversations with their last message. */
export const cacheConversations: Probe = async (ctx, params) => {
  const cache = cacheOf(ctx)
  const limit = num(params, 'limit', 50)
  const run = await timed(ctx, params, () => cache.db.query(CONVERSATIONS, [limit]))
  const order = run.last.map((r) => (r.last_message_at == null ? '' : String(r.last_message_at)))
  return {
    samples: run.samples,
    unit: 'ms',
    evidence: {
      rows: run.last.length,
      with_last_message: run.last.filter((r) => r.last_message_id != null).length,
      ordered: order.every((t, i) => i === 0 || (order[i - 1] as string) >= t),
      plan: await plan(cache.db, CONVERSATIONS, [limit]),
      cold_ms: run.cold,
      ...(params.returnRows === true
        ? { returned: run.last.map((r) => ({ id: r.id, last_message_at: r.last_message_at,
            last_message_id: r.last_message_id })) }
        : {}),
    },
  }
}
