// conversation_list_load and message_search: the app's two list screens, timed from the
// call to the parsed rows, as user A.
import type { Probe, ProbeContext, SignedInUser } from '../types'
import { errorText, num, round } from '../util'

function userA(ctx: ProbeContext): SignedInUser {
  const [a] = ctx.users
  if (!a) throw new Error('no signed-in user: call configure() first')
  return a
}

// Each probe makes one more call than ``count``: the first is reported as ``cold_ms``
// (a new connection and the CORS preflight of that endpoint), not as a sample.

/** The 50 most recent conversations with their last message and unread count. */
export const conversationList: Probe = async (ctx, params) => {
  const count = num(params, 'count', 10)
  const limit = num(params, 'limit', 50)
  const intervalMs = num(params, 'intervalMs', 100)
  const a = userA(ctx)
  const samples: number[] = []
  let rows = 0
  for (let i = 0; i <= count; i += 1) {
    const started = ctx.now()
    const { data, error } = await a.client
      .from('conversation_list')
      .select('*')
      .order('last_message_at', { ascending: false })
      .limit(limit)
    if (error) throw new Error(`conversation_list failed: ${errorText(error)}`)
    samples.push(round(ctx.now() - started))
    rows = data?.length ?? 0
    await ctx.sleep(intervalMs)
  }
  const cold = samples.shift() ?? null
  return {
    samples,
    unit: 'ms',
    evidence: {
      request: `GET /rest/v1/conversation_list?select=*&order=last_message_at.desc&limit=${limit}`,
      rows,
      cold_ms: cold,
    },
  }
}

/** Full-text search of the user's messages through rpc search_messages. */
export const messageSearch: Probe = async (ctx, params) => {
  const count = num(params, 'count', 10)
  const intervalMs = num(params, 'intervalMs', 100)
  const raw = params.terms
  const terms = Array.isArray(raw) && raw.length > 0 ? raw.map(String) : ['test query']
  const a = userA(ctx)
  const samples: number[] = []
  const hits: Record<string, number> = {}
  for (let i = 0; i <= count; i += 1) {
    const term = terms[i % terms.length] as string
    const started = ctx.now()
    const { data, error } = await a.client.rpc('search_messages', { p_query: term, p_limit: 50 })
    if (error) throw new Error(`search_messages failed: ${errorText(error)}`)
    samples.push(round(ctx.now() - started))
    hits[term] = Array.isArray(data) ? data.length : 0
    await ctx.sleep(intervalMs)
  }
  const cold = samples.shift() ?? null
  return {
    samples,
    unit: 'ms',
    evidence: {
      request: 'POST /rest/v1/rpc/search_messages {p_query, p_limit: 50}',
      hits,
      cold_ms: cold,
    },
  }
}
