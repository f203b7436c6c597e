// supabase-js compatibility of the reference server's Realtime (run by
// tests/reference/test_realtime_js.py). Prints one JSON object per line on stdout:
// {kind: "ready"} once every channel is subscribed, then each event, then {kind: "done"}.
// Env: SUPABASE_URL, SUPABASE_ANON_KEY, EMAIL + PASSWORD (a test user), CONV (conversation id),
// VSN ("1.0.0" | "2.0.0"), EXPECT (changes to wait for), TIMEOUT_MS.
import { createClient } from '@supabase/supabase-js'
import ws from 'ws'

const env = process.env
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
const expect = Number(env.EXPECT ?? '1')
const timeout = setTimeout(() => {
  out({ kind: 'timeout' })
  process.exit(2)
}, Number(env.TIMEOUT_MS ?? '20000'))

const supabase = createClient(env.SUPABASE_URL, env.SUPABASE_ANON_KEY, {
  auth: { persistSession: false },
  realtime: { transport: ws, vsn: env.VSN ?? '2.0.0', heartbeatIntervalMs: 500 },
})
// As an app does: sign in first, so channels join with the user's token (a channel
// subscribed before the session exists joins as anon, on Supabase too).
const { error: signInError } = await supabase.auth.signInWithPassword({
  email: env.EMAIL,
  password: env.PASSWORD,
})
if (signInError) {
  out({ kind: 'error', error: String(signInError) })
  process.exit(3)
}

let heartbeats = 0
supabase.realtime.onHeartbeat((status) => {
  if (status === 'ok') heartbeats += 1
})

const subscribed = (channel) =>
  new Promise((resolve, reject) => {
    channel.subscribe((status, err) => {
      out({ kind: 'status', topic: channel.topic, status, error: err ? String(err) : null })
      if (status === 'SUBSCRIBED') resolve()
      else if (status !== 'CLOSED') reject(new Error(`${channel.topic}: ${status} ${err}`))
    })
  })

let changes = 0
let systemOk
const systemSeen = new Promise((resolve) => (systemOk = resolve))
const db = supabase
  .channel('db-changes')
  .on(
    'postgres_changes',
    { event: 'INSERT', schema: 'public', table: 'messages', filter: `conversation_id=eq.${env.CONV}` },
    (payload) => {
      changes += 1
      out({ kind: 'change', payload })
      if (changes >= expect) finish()
    }
  )
  .on('system', {}, (payload) => {
    out({ kind: 'system', payload })
    if (payload.status === 'ok' && payload.extension === 'postgres_changes') systemOk()
  })

const chat = supabase
  .channel('chat-room', { config: { broadcast: { self: true, ack: true } } })
  .on('broadcast', { event: 'ping' }, (message) => out({ kind: 'broadcast', message }))

const lobby = supabase.channel('lobby', { config: { presence: { key: 'user-a' } } })
lobby.on('presence', { event: 'sync' }, () => out({ kind: 'presence', state: lobby.presenceState() }))

await subscribed(db)
await systemSeen
await subscribed(chat)
await subscribed(lobby)
out({ kind: 'ack', result: await chat.send({ type: 'broadcast', event: 'ping', payload: { n: 1 } }) })
// realtime-js's REST broadcast (POST /api/broadcast/<topic>/events/<event>).
out({ kind: 'http_send', result: await chat.httpSend('ping', { n: 2 }).catch((e) => String(e)) })
out({ kind: 'track', result: await lobby.track({ online: true }) })
out({ kind: 'ready' })

async function finish() {
  // Let a few heartbeats (every 500 ms here) go round before leaving.
  await new Promise((r) => setTimeout(r, 1200))
  out({ kind: 'heartbeats', count: heartbeats })
  const left = await db.unsubscribe()
  out({ kind: 'left', result: left })
  await supabase.removeAllChannels()
  clearTimeout(timeout)
  out({ kind: 'done' })
  process.exit(0)
}
