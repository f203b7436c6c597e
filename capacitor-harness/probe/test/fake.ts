// A fake of the parts of supabase-js the probes use, over an in-memory "server" whose
// delays the tests choose. Only what the probes call is here.
import type { SupabaseClient } from '@supabase/supabase-js'

type Handler = (payload: Record<string, unknown>) => void

export interface ServerOptions {
  sendDelayMs?: number
  deliverDelayMs?: number
  replyDelayMs?: number
  systemDelayMs?: number
  drop?: (content: string) => boolean
  objectSize?: (path: string, stored: number) => number
}

const wait = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

export class FakeChannel {
  changes: Array<{ filter: string; handler: Handler }> = []
  system: Handler[] = []
  statusCallback: ((status: string, error?: Error) => void) | null = null
  removed = false
  constructor(
    readonly name: string,
    private readonly server: FakeServer,
  ) {}
  on(type: string, filter: Record<string, string>, handler: Handler): this {
    if (type === 'postgres_changes') this.changes.push({ filter: filter.filter ?? '', handler })
    if (type === 'system') this.system.push(handler)
    return this
  }
  subscribe(callback: (status: string, error?: Error) => void): this {
    this.statusCallback = callback
    void this.join()
    return this
  }
  /** What the server does on a (re)join: reply, then the system message. */
  async join(): Promise<void> {
    await wait(this.server.options.replyDelayMs ?? 1)
    this.statusCallback?.('SUBSCRIBED')
    await wait(this.server.options.systemDelayMs ?? 1)
    for (const h of this.system) h({ extension: 'postgres_changes', status: 'ok', message: 'Subscribed to PostgreSQL' })
  }
  async unsubscribe(): Promise<string> {
    this.removed = true
    return 'ok'
  }
}

export class FakeServer {
  channels: FakeChannel[] = []
  objects = new Map<string, number>()
  signIns: string[] = []
  constructor(readonly options: ServerOptions = {}) {}

  async insert(conversationId: string, content: string): Promise<void> {
    await wait(this.options.sendDelayMs ?? 1)
    if (this.options.drop?.(content)) return
    const targets = this.channels.filter((c) => !c.removed)
    setTimeout(() => {
      for (const channel of targets) {
        for (const { filter, handler } of channel.changes) {
          if (filter === `conversation_id=eq.${conversationId}`) handler({ new: { content } })
        }
      }
    }, this.options.deliverDelayMs ?? 1)
  }

  client(): SupabaseClient {
    const server = this
    const rows = (n: number) => Array.from({ length: n }, (_, i) => ({ id: i, content: `row ${i}` }))
    const query = (n: number) => {
      const builder: Record<string, unknown> = {}
      for (const name of ['select', 'order', 'limit', 'range', 'eq']) builder[name] = () => builder
      builder.then = (resolve: (v: unknown) => void) => resolve({ data: rows(n), error: null })
      return builder
    }
    let userId = ''
    let connected = true
    const fake = {
      realtime: {
        isConnected: () => connected,
        connectionState: () => (connected ? 'open' : 'closed'),
        disconnect: async () => {
          connected = false
          return 'ok'
        },
      },
      auth: {
        async signInWithPassword({ email, password }: { email: string; password: string }) {
          server.signIns.push(email)
          if (password !== 'password123') return { data: { user: null }, error: { message: 'Invalid login credentials' } }
          userId = `id-of-${email}`
          return { data: { user: { id: userId } }, error: null }
        },
        async signOut() {
          return { error: null }
        },
      },
      channel(name: string) {
        connected = true
        const channel = new FakeChannel(name, server)
        server.channels.push(channel)
        return channel
      },
      async removeChannel(channel: FakeChannel) {
        channel.removed = true
        return 'ok'
      },
      async removeAllChannels() {
        for (const c of server.channels) c.removed = true
        return []
      },
      async rpc(name: string, args: Record<string, string>) {
        if (name === 'send_message') {
          await server.insert(args.p_conversation_id as string, args.p_content as string)
          return { data: {}, error: null }
        }
        return { data: rows(3), error: null }
      },
      from: () => query(50),
      storage: {
        from: () => ({
          async upload(path: string, body: Blob) {
            server.objects.set(path, body.size)
            return { data: { path }, error: null }
          },
          async download(path: string) {
            const stored = server.objects.get(path) ?? 0
            const size = server.options.objectSize?.(path, stored) ?? stored
            return { data: new Blob([new Uint8Array(size)]), error: null }
          },
          async remove(paths: string[]) {
            for (const p of paths) server.objects.delete(p)
            return { data: [], error: null }
          },
        }),
      },
    }
    return fake as unknown as SupabaseClient
  }
}
