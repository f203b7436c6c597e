// The demo messaging test build (app.messaging.test): the app's supabase-js client setup
// and its local SQLite cache (./sqlite.ts), plus devicelab's probes on window.devicelab.
// On a phone it runs inside Capacitor's WebView; on the web device it is a plain page. No
// backend address is built in: devicelab passes it to window.devicelab.configure() at run
// time.
import { Capacitor } from '@capacitor/core'
import { install } from '@devicelab/probe'
import { createClient, type SupabaseClientOptions } from '@supabase/supabase-js'
import { BACKGROUND_DISCONNECT_MS, backgroundPolicy } from './background'
import { localSqlite } from './sqlite'

/**
 * The app's realtime reconnect policy: retry soon after a drop, then every 2 s at most
 * (supabase-js's default waits 1, 2, 5, then 10 s between attempts, so a link that comes
 * back just after an attempt stays unused for up to 10 s). Mobile links drop often.
 */
export const RECONNECT_AFTER_MS = [250, 500, 1000, 2000]

const clientOptions: SupabaseClientOptions<'public'> = {
  realtime: {
    reconnectAfterMs: (tries: number) => RECONNECT_AFTER_MS[tries - 1] ?? 2000,
  },
}

// Realtime is disconnected after a minute in the background (./background.ts).
const background = backgroundPolicy()

const api = install(window as unknown as { devicelab?: ReturnType<typeof install> }, {
  createClient: (url, key, options) => background.track(createClient(url, key, options)),
  clientOptions,
  sqlite: localSqlite,
  app: {
    id: 'app.messaging.test',
    platform: Capacitor.getPlatform(),
    build: import.meta.env.MODE,
    reconnect_after_ms: RECONNECT_AFTER_MS,
    background_disconnect_ms: BACKGROUND_DISCONNECT_MS,
    local_sqlite: localSqlite.engine,
  },
})

const status = document.querySelector('[data-testid="status"]')
if (status) status.textContent = `ready: devicelab probe API v${api.version}`

declare global {
  interface Window {
    devicelab?: ReturnType<typeof install>
  }
}
