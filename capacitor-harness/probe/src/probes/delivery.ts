// message_delivery and subscription_setup: two signed-in users in one page, so both
// clients cross the same shaped link and share one clock (performance.now()).
import { ConversationWatch } from '../realtime'
import type { Probe, ProbeContext, SignedInUser } from '../types'
import { errorText, num, round, str, unique, withTimeout } from '../util'

export function twoUsers(ctx: ProbeContext): [SignedInUser, SignedInUser] {
  const [a, b] = ctx.users
  if (!a || !b) throw new Error('this probe needs two signed-in users: configure() with users A and B')
  return [a, b]
}

/** Send one message as ``user`` the way the app does (rpc send_message); returns its content. */
export async function send(user: SignedInUser, conversationId: string, content: string): Promise<void> {
  const { error } = await user.client.rpc('send_message', {
    p_conversation_id: conversationId,
    p_content: content,
  })
  if (error) throw new Error(`send_message failed: ${errorText(error)}`)
}

/**
 * A sends one warm-up message (its time is reported as ``cold_ms``: a new connection and
 * the CORS preflight of the first call), then ``count`` messages, one at a time; each
 * sample is the time from A's send call to B's callback for that very message (matched
 * by a unique content).
 */
export const messageDelivery: Probe = async (ctx, params) => {
  const conversationId = str(params, 'conversationId')
  const count = num(params, 'count', 10)
  const intervalMs = num(params, 'intervalMs', 250)
  const timeoutMs = num(params, 'timeoutMs', 10_000)
  const [a, b] = twoUsers(ctx)
  const watch = new ConversationWatch(ctx, b, conversationId)
  try {
    const live = await withTimeout(watch.subscribed, timeoutMs, 'realtime subscription of B')
    const samples: number[] = []
    const sendMs: number[] = []
    let cold: number | null = null
    let lost = 0
    for (let i = 0; i <= count; i += 1) {
      const content = unique(`devicelab delivery ${i}`)
      const sent = ctx.now()
      const arrival = watch.arrival(content, timeoutMs)
      await send(a, conversationId, content)
      const acked = round(ctx.now() - sent)
      const arrived = await arrival
      if (i === 0) cold = arrived === null ? null : round(arrived - sent)
      else if (arrived === null) lost += 1
      else {
        samples.push(round(arrived - sent))
        sendMs.push(acked)
      }
      await ctx.sleep(intervalMs)
    }
    return {
      samples,
      unit: 'ms',
      evidence: {
        sent: count,
        received: samples.length,
        lost,
        lost_after_ms: timeoutMs,
        cold_ms: cold,
        send_round_trip_ms: sendMs,
        subscribed_after_ms: round(live - watch.startedAt),
        path: 'A: POST /rest/v1/rpc/send_message -> PostgreSQL -> Realtime -> B: websocket postgres_changes',
        clock: 'performance.now() of the page; A and B are two supabase clients in it',
      },
    }
  } finally {
    await watch.close()
  }
}

/**
 * Each sample: a new chat channel of B, from subscribe() to the "Subscribed to PostgreSQL"
 * system message (not phx_reply: changes before the system message are lost). With
 * ``cold`` (the default) the realtime socket is closed first, so the sample includes the
 * websocket connect, as when the app opens a chat after launch; ``cold: false`` times
 * the join alone on an open socket.
 */
export const subscriptionSetup: Probe = async (ctx, params) => {
  const conversationId = str(params, 'conversationId')
  const count = num(params, 'count', 5)
  const intervalMs = num(params, 'intervalMs', 250)
  const timeoutMs = num(params, 'timeoutMs', 15_000)
  const cold = params.cold !== false
  const [, b] = twoUsers(ctx)
  const samples: number[] = []
  const replies: Array<number | null> = []
  const connectedBefore: boolean[] = []
  for (let i = 0; i < count; i += 1) {
    const realtime = b.client.realtime
    if (cold && realtime.isConnected()) {
      await realtime.disconnect()
      const since = ctx.now()
      while (String(realtime.connectionState()) !== 'closed' && ctx.now() - since < timeoutMs) {
        await ctx.sleep(10)
      }
    }
    connectedBefore.push(realtime.isConnected())
    const watch = new ConversationWatch(ctx, b, conversationId)
    try {
      const live = await withTimeout(watch.subscribed, timeoutMs, 'realtime subscription')
      samples.push(round(live - watch.startedAt))
      replies.push(watch.repliedAt === null ? null : round(watch.repliedAt - watch.startedAt))
    } finally {
      await watch.close()
    }
    await ctx.sleep(intervalMs)
  }
  return {
    samples,
    unit: 'ms',
    evidence: {
      until: 'system message "Subscribed to PostgreSQL" (postgres_changes ok)',
      phx_reply_ms: replies,
      socket_open_before: connectedBefore,
      cold,
      includes: cold ? 'websocket connect + channel join' : 'channel join on an open socket',
    },
  }
}
