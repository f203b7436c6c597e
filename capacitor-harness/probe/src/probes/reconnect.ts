// reconnect: the link drops (devicelab cuts every connection at its proxy), comes back,
// and we time from "online again" to B's chat channel being subscribed again AND a new
// message from A reaching B ("reconnect and sync").
//
// The link is driven from outside the page, so the probe has three steps:
//   reconnect.prepare  B subscribes to the conversation (live before the cut)
//   reconnect.online   called just BEFORE devicelab puts the link back online: it marks
//                      the moment and starts waiting (the mark precedes the real moment by
//                      the control call's few ms, so the sample can only over-count)
//   reconnect.result   waits for resubscription + one message, returns the sample
import { ConversationWatch } from '../realtime'
import type { Probe, ProbeContext } from '../types'
import { errorText, num, round, str, unique, withTimeout } from '../util'
import { send, twoUsers } from './delivery'

interface Cycle {
  watch: ConversationWatch
  conversationId: string
  timeoutMs: number
  online?: number
  outcome?: Promise<Record<string, unknown>>
}

const KEY = 'reconnect'

function cycle(ctx: ProbeContext): Cycle {
  const found = ctx.state.get(KEY) as Cycle | undefined
  if (!found) throw new Error('reconnect.prepare was not called')
  return found
}

export const reconnectPrepare: Probe = async (ctx, params) => {
  const conversationId = str(params, 'conversationId')
  const timeoutMs = num(params, 'timeoutMs', 15_000)
  const [, b] = twoUsers(ctx)
  const previous = ctx.state.get(KEY) as Cycle | undefined
  if (previous) await previous.watch.close()
  const watch = new ConversationWatch(ctx, b, conversationId)
  ctx.state.set(KEY, { watch, conversationId, timeoutMs })
  const live = await withTimeout(watch.subscribed, timeoutMs, 'realtime subscription of B')
  return { samples: [], unit: 'ms', evidence: { subscribed_after_ms: round(live - watch.startedAt) } }
}

export const reconnectOnline: Probe = async (ctx) => {
  const c = cycle(ctx)
  const online = ctx.now()
  c.online = online
  c.outcome = (async () => {
    const [a] = twoUsers(ctx)
    const resubscribed = await c.watch.systemOkAfter(online, c.timeoutMs)
    if (resubscribed === null) {
      throw new Error(`B's channel was not subscribed again within ${c.timeoutMs} ms`)
    }
    // A's first send may hit a connection the browser still believes in: retry briefly.
    const content = unique('devicelab reconnect')
    let attempts = 0
    let sent = 0
    for (;;) {
      attempts += 1
      sent = ctx.now()
      try {
        await send(a, c.conversationId, content)
        break
      } catch (error) {
        if (ctx.now() - online > c.timeoutMs) throw new Error(`A could not send: ${errorText(error)}`)
        await ctx.sleep(100)
      }
    }
    const arrived = await c.watch.arrival(content, c.timeoutMs)
    if (arrived === null) throw new Error(`the message sent after reconnecting never reached B`)
    return {
      total_ms: round(arrived - online),
      resubscribed_ms: round(resubscribed - online),
      message_ms: round(arrived - sent),
      send_attempts: attempts,
    }
  })()
  c.outcome.catch(() => undefined) // reported by reconnect.result
  return { samples: [], unit: 'ms', evidence: {} }
}

export const reconnectResult: Probe = async (ctx) => {
  const c = cycle(ctx)
  if (!c.outcome || c.online === undefined) throw new Error('reconnect.online was not called')
  try {
    const outcome = await c.outcome
    return {
      samples: [outcome.total_ms as number],
      unit: 'ms',
      evidence: { ...outcome, channel_statuses: c.watch.statuses, online_mark_ms: round(c.online - c.watch.startedAt) },
    }
  } finally {
    ctx.state.delete(KEY)
    await c.watch.close()
  }
}
