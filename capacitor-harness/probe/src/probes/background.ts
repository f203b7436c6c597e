// background_disconnect: the story's "Background Behavior: Realtime disconnects after 1
// minute in background" (and re-connects in the foreground). devicelab sends the app to
// the background from outside (Appium's mobile: backgroundApp, or a tab in front of a
// browser standing in for the WebView) and brings it back, so the probe has two steps:
//   background.prepare  B subscribes to the conversation (live); the recorder starts
//   background.result   (the app is in front again) waits for B's channel to be subscribed
//                       again; the sample is the seconds from "hidden" to B's realtime
//                       socket closed (none when it never closed)
// The recorder notes the page's visibility changes (what @capacitor/app's appStateChange
// follows on the web; on a phone the WebView's page is hidden with the app) and polls B's
// socket every 250 ms (a hidden page's timers run about once a second: the resolution).
import { ConversationWatch } from '../realtime'
import type { Probe, ProbeContext } from '../types'
import { num, round, str, withTimeout } from '../util'
import { twoUsers } from './delivery'

interface Recorder {
  watch: ConversationWatch
  events: { event: string; at: number }[]
  stop: () => void
}

const KEY = 'background'

function recorder(ctx: ProbeContext): Recorder {
  const found = ctx.state.get(KEY) as Recorder | undefined
  if (!found) throw new Error('background.prepare was not called')
  return found
}

export const backgroundPrepare: Probe = async (ctx, params) => {
  const conversationId = str(params, 'conversationId')
  const timeoutMs = num(params, 'timeoutMs', 15_000)
  const [, b] = twoUsers(ctx)
  const previous = ctx.state.get(KEY) as Recorder | undefined
  if (previous) {
    previous.stop()
    await previous.watch.close()
  }
  const watch = new ConversationWatch(ctx, b, conversationId)
  const live = await withTimeout(watch.subscribed, timeoutMs, 'realtime subscription of B')
  const events: { event: string; at: number }[] = []
  const note = (event: string) => {
    events.push({ event, at: ctx.now() })
    if (events.length > 200) events.shift()
  }
  let connected = b.client.realtime.isConnected()
  note(connected ? 'connected' : 'disconnected')
  const onVisibility = () => note(document.hidden ? 'hidden' : 'visible')
  document.addEventListener('visibilitychange', onVisibility)
  const poll = setInterval(() => {
    const now = b.client.realtime.isConnected()
    if (now !== connected) {
      connected = now
      note(now ? 'connected' : 'disconnected')
    }
  }, 250)
  const stop = () => {
    clearInterval(poll)
    document.removeEventListener('visibilitychange', onVisibility)
  }
  ctx.state.set(KEY, { watch, events, stop })
  return {
    samples: [],
    unit: 's',
    evidence: { subscribed_after_ms: round(live - watch.startedAt), hidden_now: document.hidden },
  }
}

export const backgroundResult: Probe = async (ctx, params) => {
  const r = recorder(ctx)
  const timeoutMs = num(params, 'timeoutMs', 15_000)
  try {
    const first = (event: string, after = -Infinity) =>
      r.events.find((e) => e.event === event && e.at >= after)?.at
    const hidden = first('hidden')
    if (hidden === undefined) {
      throw new Error('the page was never hidden: the app did not go to the background')
    }
    const visible = first('visible', hidden)
    if (visible === undefined || document.hidden) {
      throw new Error('the app is still in the background')
    }
    const closed = first('disconnected', hidden)
    const disconnected = closed !== undefined && closed <= visible
    // Back in front: B's chat channel subscribed again ("re-connect when app returns").
    const resubscribed = await r.watch.systemOkAfter(visible, timeoutMs)
    const since = (t: number) => t - r.watch.startedAt
    return {
      samples: disconnected ? [round((closed - hidden) / 1000)] : [],
      unit: 's',
      evidence: {
        disconnected,
        background_s: round((visible - hidden) / 1000),
        reconnected_ms: resubscribed === null ? null : round(resubscribed - visible),
        events: r.events.map((e) => ({ event: e.event, t_ms: round(since(e.at)) })),
        resolution_ms: 1000,
      },
    }
  } finally {
    r.stop()
    ctx.state.delete(KEY)
    await r.watch.close()
  }
}
