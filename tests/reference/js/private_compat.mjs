// supabase-js against the reference server's private channels (Realtime Authorization),
// run by tests/reference/test_realtime_private.py. Prints one JSON verdict line.
// Env: SUPABASE_URL, SUPABASE_ANON_KEY, PASSWORD (the test users'), ROOM (a private topic
// testusers 1 and 2 may use), CLOSED (a private topic no policy opens).
import { createClient } from '@supabase/supabase-js'
import ws from 'ws'

const env = process.env
const verdict = {}
const done = () => {
  process.stdout.write(JSON.stringify(verdict) + '\n')
  process.exit(0)
}
setTimeout(() => {
  verdict.timeout = true
  done()
}, 20000)

// As an app does: sign in first, so channels join with the user's token.
const signedIn = async (email) => {
  const supabase = createClient(env.SUPABASE_URL, env.SUPABASE_ANON_KEY, {
    auth: { persistSession: false },
    realtime: { transport: ws },
  })
  const { error } = await supabase.auth.signInWithPassword({ email, password: env.PASSWORD })
  if (error) throw error
  return supabase
}
// The first status a subscription reaches (SUBSCRIBED, CHANNEL_ERROR, TIMED_OUT).
const firstStatus = (channel) =>
  new Promise((resolve) =>
    channel.subscribe((status, err) => resolve({ status, error: err ? err.message : null }))
  )

const one = await signedIn('testuser1@example.com')
const two = await signedIn('testuser2@example.com')
let heard
const said = new Promise((resolve) => (heard = resolve))
const listener = two
  .channel(env.ROOM, { config: { private: true } })
  .on('broadcast', { event: 'say' }, (message) => heard(message.payload))
verdict.listener = await firstStatus(listener)
const talker = one.channel(env.ROOM, { config: { private: true, broadcast: { ack: true } } })
verdict.talker = await firstStatus(talker)
verdict.ack = await talker.send({ type: 'broadcast', event: 'say', payload: { text: 'hi' } })
verdict.heard = await Promise.race([said, new Promise((r) => setTimeout(() => r(null), 5000))])
verdict.closed = await firstStatus(one.channel(env.CLOSED, { config: { private: true } }))
done()
