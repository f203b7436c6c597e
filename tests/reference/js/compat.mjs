// supabase-js against the devicelab reference server: the messaging flows of the app.
// Usage: node compat.mjs  (env SUPABASE_URL, SUPABASE_ANON_KEY, CONV_MINE, CONV_OTHER)
// Prints one JSON line {ok: true, steps: {...}} or {ok: false, step, error} and exits 0/1.
import { createClient } from '@supabase/supabase-js'
import ws from 'ws'

const url = process.env.SUPABASE_URL
const anonKey = process.env.SUPABASE_ANON_KEY
const mine = process.env.CONV_MINE // a conversation of testuser1
const other = process.env.CONV_OTHER // a conversation testuser1 is not in
const steps = {}
let step = 'start'

function check(cond, message) {
  if (!cond) throw new Error(message)
}

async function main() {
  const supabase = createClient(url, anonKey, {
    auth: { persistSession: false, autoRefreshToken: false },
    realtime: { transport: ws }, // Node 20 has no global WebSocket
  })

  step = 'sign_in'
  const { data: auth, error: authError } = await supabase.auth.signInWithPassword({
    email: 'testuser1@example.com',
    password: 'password123',
  })
  check(!authError, `sign in: ${authError?.message}`)
  check(auth.session?.access_token && auth.user?.id, 'no session')
  steps.sign_in = auth.user.id

  step = 'bad_password'
  const bad = await supabase.auth.signInWithPassword({
    email: 'testuser1@example.com',
    password: 'wrong',
  })
  check(bad.error && bad.error.status === 400, 'a wrong password was accepted')
  // A failed sign-in must not drop the good session; sign in again to be sure.
  await supabase.auth.signInWithPassword({ email: 'testuser1@example.com', password: 'password123' })

  step = 'get_user'
  const { data: who, error: whoError } = await supabase.auth.getUser()
  check(!whoError && who.user.email === 'testuser1@example.com', `getUser: ${whoError?.message}`)

  step = 'update_user'
  const status = `away ${Date.now()}`
  const updated = await supabase.auth.updateUser({ data: { status } })
  check(!updated.error && updated.data.user.user_metadata.status === status,
    `updateUser: ${updated.error?.message}`)
  steps.update_user = status

  step = 'conversation_list'
  const { data: convs, error: convError } = await supabase
    .from('conversation_list')
    .select('*')
    .order('last_message_at', { ascending: false, nullsFirst: false })
    .limit(50)
  check(!convError, `conversation_list: ${convError?.message}`)
  check(convs.some((c) => c.id === mine), 'own conversation missing')
  check(!convs.some((c) => c.id === other), 'RLS: a foreign conversation is listed')
  steps.conversation_list = convs.length

  step = 'page_messages'
  const page1 = await supabase
    .from('messages')
    .select('id, content, created_at', { count: 'exact' })
    .eq('conversation_id', mine)
    .order('created_at', { ascending: false })
    .range(0, 49)
  check(!page1.error, `page 1: ${page1.error?.message}`)
  check(page1.data.length === 50 && page1.count >= 100, `page 1: ${page1.data.length}/${page1.count}`)
  const page2 = await supabase
    .from('messages')
    .select('id, content, created_at')
    .eq('conversation_id', mine)
    .order('created_at', { ascending: false })
    .range(50, 99)
  check(!page2.error && page2.data.length === 50, 'page 2')
  check(page2.data[0].created_at <= page1.data[49].created_at, 'pages out of order')
  steps.page_messages = page1.count

  step = 'embedding'
  const embedded = await supabase
    .from('messages')
    .select('id, content, sender:profiles!sender_id(username)')
    .eq('conversation_id', mine)
    .limit(2)
  check(!embedded.error, `embedding: ${embedded.error?.message}`)
  check(embedded.data[0].sender?.username?.startsWith('testuser'), 'embedded sender')

  step = 'last_message_per_conversation'
  const last = await supabase
    .from('conversations')
    .select('id, messages(id)')
    .order('created_at', { referencedTable: 'messages', ascending: false })
    .limit(1, { referencedTable: 'messages' })
  check(!last.error, `last message: ${last.error?.message}`)
  check(last.data.every((c) => c.messages.length <= 1), 'referenced limit is not per parent')
  const newest = await supabase
    .from('messages')
    .select('id, sender:profiles!sender_id(username)')
    .eq('conversation_id', mine)
    .order('created_at', { ascending: false })
    .limit(1)
    .single()
  check(!newest.error, `newest: ${newest.error?.message}`)
  const lastOfMine = last.data.find((c) => c.id === mine)
  check(lastOfMine?.messages[0]?.id === newest.data.id, 'not the newest message of mine')

  step = 'inner_filter'
  const inner = await supabase
    .from('messages')
    .select('id, sender:profiles!sender_id!inner(username)')
    .eq('sender.username', newest.data.sender.username)
    .eq('conversation_id', mine)
    .order('created_at', { ascending: false })
    .limit(5)
  check(!inner.error, `inner: ${inner.error?.message}`)
  check(inner.data.some((m) => m.id === newest.data.id), `inner: ${inner.data.length} rows`)
  check(
    inner.data.every((m) => m.sender?.username === newest.data.sender.username),
    'inner: other senders'
  )

  step = 'rls_messages'
  const foreign = await supabase.from('messages').select('id').eq('conversation_id', other)
  check(!foreign.error && foreign.data.length === 0, 'RLS: foreign messages are visible')

  step = 'search_messages'
  const found = await supabase.rpc('search_messages', { p_query: 'pizza', p_limit: 5 })
  check(!found.error, `search: ${found.error?.message}`)
  check(found.data.length > 0 && found.data.every((m) => m.content.includes('pizza')), 'search')
  steps.search_messages = found.data.length

  step = 'insert_message'
  const text = `hello from supabase-js ${Date.now()}`
  const inserted = await supabase
    .from('messages')
    .insert({ conversation_id: mine, sender_id: auth.user.id, content: text })
    .select()
    .single()
  check(!inserted.error, `insert: ${inserted.error?.message}`)
  check(inserted.data.content === text, 'insert: content differs')
  steps.insert_message = inserted.data.id

  step = 'csv'
  const csv = await supabase.from('messages').select('id, type').eq('conversation_id', mine)
    .order('created_at', { ascending: false }).limit(2).csv()
  check(!csv.error && typeof csv.data === 'string' && csv.data.startsWith('id,type\n')
    && csv.data.split('\n').length === 3, `csv: ${csv.error?.message ?? csv.data}`)
  steps.csv = csv.data.length

  step = 'bulk_insert_defaults'
  // defaultToNull: false sends Prefer: missing=default: the row without type and
  // metadata gets their defaults (NOT NULL columns: as nulls the insert would fail).
  const bulk = await supabase
    .from('messages')
    .insert(
      [
        { conversation_id: mine, sender_id: auth.user.id, content: 'a photo', type: 'image',
          media_url: 'media/x.jpg' },
        { conversation_id: mine, sender_id: auth.user.id, content: 'plain' },
      ],
      { defaultToNull: false },
    )
    .select('id, type, media_url, metadata')
  check(!bulk.error, `bulk insert: ${bulk.error?.message}`)
  check(bulk.data.length === 2 && bulk.data[0].type === 'image' && bulk.data[1].type === 'text'
    && bulk.data[1].media_url === null && JSON.stringify(bulk.data[1].metadata) === '{}'
    && bulk.data[0].id !== bulk.data[1].id, `bulk insert defaults: ${JSON.stringify(bulk.data)}`)
  steps.bulk_insert_defaults = bulk.data.length

  step = 'insert_foreign_refused'
  const refused = await supabase
    .from('messages')
    .insert({ conversation_id: other, sender_id: auth.user.id, content: 'sneaky' })
  check(refused.error && refused.error.code === '42501', 'RLS: insert into a foreign conversation')

  step = 'send_message_rpc'
  const sent = await supabase.rpc('send_message', { p_conversation_id: mine, p_content: 'via rpc' })
  check(!sent.error && sent.data.content === 'via rpc', `send_message: ${sent.error?.message}`)

  step = 'upload_5mb'
  const bytes = new Uint8Array(5 * 1024 * 1024)
  for (let i = 0; i < bytes.length; i += 4096) bytes[i] = (i / 4096) % 251
  const path = `js/${Date.now()}/video.bin`
  const up = await supabase.storage
    .from('media')
    .upload(path, new Blob([bytes]), { contentType: 'video/mp4', upsert: false })
  check(!up.error, `upload: ${up.error?.message}`)
  check(up.data.fullPath === `media/${path}`, `upload fullPath ${up.data.fullPath}`)

  step = 'download_5mb'
  const down = await supabase.storage.from('media').download(path)
  check(!down.error, `download: ${down.error?.message}`)
  const got = new Uint8Array(await down.data.arrayBuffer())
  check(got.length === bytes.length && got.every((b, i) => b === bytes[i]), 'download differs')

  step = 'list'
  const listed = await supabase.storage.from('media').list(path.split('/').slice(0, 2).join('/'))
  check(!listed.error && listed.data.some((f) => f.name === 'video.bin'), 'list')

  step = 'signed_url'
  const signed = await supabase.storage.from('media').createSignedUrl(path, 60)
  check(!signed.error, `sign: ${signed.error?.message}`)
  const viaUrl = await fetch(signed.data.signedUrl)
  check(viaUrl.status === 200, `signed GET ${viaUrl.status}`)
  check((await viaUrl.arrayBuffer()).byteLength === bytes.length, 'signed GET size')

  step = 'signed_urls'
  const many = await supabase.storage.from('media').createSignedUrls([path, 'nope/none.bin'], 60)
  check(!many.error && many.data[0].signedUrl && many.data[1].error, 'createSignedUrls')

  step = 'tampered_url'
  const u = new URL(signed.data.signedUrl)
  const token = u.searchParams.get('token')
  u.searchParams.set('token', token.slice(0, -3) + (token.endsWith('AAA') ? 'BBB' : 'AAA'))
  const tampered = await fetch(u)
  check(tampered.status === 400 || tampered.status === 403, `tampered GET ${tampered.status}`)

  step = 'signed_upload'
  const target = `js/${Date.now()}/signed.txt`
  const upUrl = await supabase.storage.from('media').createSignedUploadUrl(target)
  check(!upUrl.error && upUrl.data.token, `createSignedUploadUrl: ${upUrl.error?.message}`)
  const viaToken = await supabase.storage
    .from('media')
    .uploadToSignedUrl(target, upUrl.data.token, new Blob(['signed upload']), {
      contentType: 'text/plain',
    })
  check(!viaToken.error, `uploadToSignedUrl: ${viaToken.error?.message}`)
  const asDownload = await fetch(
    `${url}/storage/v1/object/sign/media/${target}?token=${upUrl.data.token}`
  )
  check(asDownload.status === 400, 'an upload token served a download')

  step = 'move_copy'
  const moved = await supabase.storage.from('media').move(target, `${target}.moved`)
  check(!moved.error, `move: ${moved.error?.message}`)
  const copied = await supabase.storage.from('media').copy(`${target}.moved`, `${target}.copy`)
  check(!copied.error, `copy: ${copied.error?.message}`)
  const copyText = await supabase.storage.from('media').download(`${target}.copy`)
  check(!copyText.error && (await copyText.data.text()) === 'signed upload', 'copy content')

  step = 'remove'
  const removed = await supabase.storage
    .from('media')
    .remove([path, `${target}.moved`, `${target}.copy`])
  check(!removed.error && removed.data.length === 3, 'remove')

  step = 'sign_out'
  const out = await supabase.auth.signOut()
  check(!out.error, `signOut: ${out.error?.message}`)
  const anonRead = await supabase.from('conversation_list').select('id')
  check(anonRead.error || anonRead.data.length === 0, 'anon sees conversations')
}

main().then(
  () => {
    console.log(JSON.stringify({ ok: true, steps }))
    process.exit(0)
  },
  (err) => {
    console.log(JSON.stringify({ ok: false, step, error: String(err?.message ?? err) }))
    process.exit(1)
  }
)
