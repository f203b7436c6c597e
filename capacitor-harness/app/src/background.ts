// The app's background behaviour (story 8.1.7, Battery Impact: "Use @capacitor/app to detect
// background state; disconnect Realtime when app backgrounded > 1 minute; re-connect when
// app returns to foreground"). Every supabase client the app creates is tracked; after a
// minute in the background their realtime sockets are closed (channels stay registered),
// and back in the foreground they connect again and the channels rejoin.
import { App } from '@capacitor/app'
import type { SupabaseClient } from '@supabase/supabase-js'

/** How long the app may stay in the background before Realtime is disconnected. */
export const BACKGROUND_DISCONNECT_MS = 60_000

export interface BackgroundPolicy {
  /** Track a client (the probes' clients are created through the app's createClient). */
  track(client: SupabaseClient): SupabaseClient
  /** What the policy did, newest last (for devicelab's evidence). */
  readonly events: { at: number; event: string }[]
}

export function backgroundPolicy(delayMs = BACKGROUND_DISCONNECT_MS): BackgroundPolicy {
  const clients = new Set<SupabaseClient>()
  const events: { at: number; event: string }[] = []
  let timer: ReturnType<typeof setTimeout> | undefined
  let disconnected = false
  const note = (event: string) => {
    events.push({ at: Date.now(), event })
    if (events.length > 100) events.shift()
  }

  const disconnect = async () => {
    timer = undefined
    disconnected = true
    note('realtime disconnect')
    await Promise.all([...clients].map((c) => c.realtime.disconnect()))
  }

  const reconnect = () => {
    if (!disconnected) return
    disconnected = false
    note('realtime connect')
    for (const client of clients) {
      // Only clients that had channels: the others connect when they first subscribe.
      if (client.realtime.getChannels().length > 0) client.realtime.connect()
    }
  }

  void App.addListener('appStateChange', ({ isActive }) => {
    note(isActive ? 'foreground' : 'background')
    if (isActive) {
      if (timer !== undefined) clearTimeout(timer)
      timer = undefined
      reconnect()
    } else if (timer === undefined) {
      timer = setTimeout(() => void disconnect(), delayMs)
    }
  })

  return {
    track(client) {
      clients.add(client)
      return client
    },
    events,
  }
}
