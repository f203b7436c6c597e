// One realtime subscription of a user to a conversation's new messages, as the app's chat
// screen makes it, with the moments that matter kept: the join reply (phx_reply), every
// "Subscribed to PostgreSQL" system message (the subscription is live only then: changes
// before it are lost), each message's arrival, and the channel's status changes.
import type { RealtimeChannel } from '@supabase/supabase-js'
import type { ProbeContext, SignedInUser } from './types'
import { type Deferred, deferred, round, unique } from './util'

export interface StatusChange {
  status: string
  at_ms: number
  error?: string
}

export class ConversationWatch {
  readonly channel: RealtimeChannel
  readonly startedAt: number
  /** performance.now() of the first phx_reply "ok" (realtime-js's SUBSCRIBED). */
  repliedAt: number | null = null
  /** Every "Subscribed to PostgreSQL" system message, in order. */
  readonly systemOk: number[] = []
  readonly statuses: StatusChange[] = []
  private readonly arrived = new Map<string, number>()
  private readonly waiting = new Map<string, (at: number) => void>()
  private readonly systemWaiters: Array<{ after: number; done: Deferred<number> }> = []
  private readonly first: Deferred<number> = deferred<number>()

  constructor(
    private readonly ctx: ProbeContext,
    private readonly user: SignedInUser,
    conversationId: string,
  ) {
    this.first.promise.catch(() => undefined) // awaited by whoever needs it; never unhandled
    this.startedAt = ctx.now()
    this.channel = this.user.client
      .channel(unique('devicelab-chat'))
      .on(
        'postgres_changes',
        {
          event: 'INSERT',
          schema: 'public',
          table: 'messages',
          filter: `conversation_id=eq.${conversationId}`,
        },
        (payload: { new?: Record<string, unknown> }) => this.onMessage(payload),
      )
      .on('system', {}, (payload: Record<string, unknown>) => this.onSystem(payload))
    this.channel.subscribe((status: string, error?: Error) => {
      const at = this.ctx.now()
      this.statuses.push({
        status,
        at_ms: round(at - this.startedAt),
        ...(error ? { error: error.message } : {}),
      })
      if (status === 'SUBSCRIBED' && this.repliedAt === null) this.repliedAt = at
      if ((status === 'CHANNEL_ERROR' || status === 'TIMED_OUT') && this.systemOk.length === 0) {
        this.first.reject(new Error(`realtime join failed: ${status}${error ? `: ${error.message}` : ''}`))
      }
    })
  }

  /** Resolves with the moment of the first "Subscribed to PostgreSQL"; rejects on a failed join. */
  get subscribed(): Promise<number> {
    return this.first.promise
  }

  /** The first "Subscribed to PostgreSQL" later than ``after`` (a rejoin), or null at ``timeoutMs``. */
  systemOkAfter(after: number, timeoutMs: number): Promise<number | null> {
    const seen = this.systemOk.find((t) => t > after)
    if (seen !== undefined) return Promise.resolve(seen)
    const done = deferred<number>()
    this.systemWaiters.push({ after, done })
    return timed(done.promise, timeoutMs)
  }

  /** When the message whose content is ``content`` arrived, or null at ``timeoutMs``. */
  arrival(content: string, timeoutMs: number): Promise<number | null> {
    const seen = this.arrived.get(content)
    if (seen !== undefined) return Promise.resolve(seen)
    return timed(
      new Promise<number>((resolve) => this.waiting.set(content, resolve)),
      timeoutMs,
    ).finally(() => this.waiting.delete(content))
  }

  /** Leave the channel (supabase-js closes the socket when it was the last one). */
  async close(): Promise<void> {
    await this.user.client.removeChannel(this.channel)
  }

  private onMessage(payload: { new?: Record<string, unknown> }): void {
    const at = this.ctx.now()
    const content = String(payload.new?.content ?? '')
    this.arrived.set(content, at)
    this.waiting.get(content)?.(at)
  }

  private onSystem(payload: Record<string, unknown>): void {
    if (payload.extension !== 'postgres_changes') return
    const at = this.ctx.now()
    if (payload.status !== 'ok') {
      this.statuses.push({ status: 'SYSTEM_ERROR', at_ms: round(at - this.startedAt), error: String(payload.message) })
      this.first.reject(new Error(`realtime subscription refused: ${String(payload.message)}`))
      return
    }
    this.systemOk.push(at)
    this.first.resolve(at)
    for (const waiter of this.systemWaiters.splice(0)) {
      if (at > waiter.after) waiter.done.resolve(at)
      else this.systemWaiters.push(waiter)
    }
  }
}

function timed<T>(promise: Promise<T>, ms: number): Promise<T | null> {
  let timer: ReturnType<typeof setTimeout> | undefined
  const timeout = new Promise<null>((resolve) => {
    timer = setTimeout(() => resolve(null), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}
