// The sync half of local_cache.prepare: A's rows read from Supabase in pages, and the
// timestamps written in one fixed form so SQLite orders them as text.
import { errorText } from '../util'

export type Row = Record<string, unknown>

/** The columns the cache keeps (local_conversations / local_messages use the same names). */
export const CONVERSATION_COLUMNS = ['id', 'type', 'name', 'participants', 'created_at', 'last_message_at']
export const MESSAGE_COLUMNS = ['id', 'conversation_id', 'sender_id', 'content', 'type', 'created_at']

/** A PostgREST query of rows ``from``..``to`` (inclusive), as supabase-js builds it. */
type Page = (from: number, to: number) => PromiseLike<{ data: unknown; error: unknown }>

/**
 * Reads pages of ``pageSize`` rows until ``limit`` rows or a short page; returns the rows.
 * Throws with ``what`` and the server's message when a page fails.
 */
export async function fetchPages(page: Page, pageSize: number, limit: number, what: string): Promise<Row[]> {
  const rows: Row[] = []
  while (rows.length < limit) {
    const from = rows.length
    const to = Math.min(limit, from + pageSize) - 1
    const { data, error } = await page(from, to)
    if (error) throw new Error(`syncing ${what} failed: ${errorText(error)}`)
    const got = Array.isArray(data) ? (data as Row[]) : []
    rows.push(...got)
    if (got.length < to - from + 1) break
  }
  return rows
}

const TIMESTAMP = /^(\d{4}-\d\d-\d\d)[T ](\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d(?::?\d\d)?)?$/

/**
 * ``value`` (PostgREST's timestamptz text) as ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` in UTC, or
 * null. PostgreSQL trims trailing zeros of the fraction and may print another offset; in
 * one fixed width the text order is the time order, to the microsecond (a Date would keep
 * milliseconds only, and messages sent in the same millisecond would tie).
 */
export function utcText(value: unknown): string | null {
  if (value === null || value === undefined) return null
  const text = String(value)
  const match = TIMESTAMP.exec(text)
  if (!match) throw new Error(`not a timestamp: ${JSON.stringify(text)}`)
  const [, day, time, fraction = '', offset = 'Z'] = match
  const micros = fraction.padEnd(6, '0').slice(0, 6)
  if (offset === 'Z' || /^[+-]00(:?00)?$/.test(offset)) return `${day}T${time}.${micros}Z`
  const hhmm = offset.length === 3 ? `${offset}:00` : offset.replace(/^([+-]\d\d)(\d\d)$/, '$1:$2')
  const utc = new Date(`${day}T${time}${hhmm}`)
  return `${utc.toISOString().slice(0, 19)}.${micros}Z`
}
