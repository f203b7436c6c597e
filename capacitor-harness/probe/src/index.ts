// window.devicelab: the in-app probes devicelab drives over a JS channel.
//
//   await window.devicelab.configure({supabaseUrl, anonKey, users: [{email, password}, ...]})
//   await window.devicelab.run('message_delivery', {conversationId, count: 10})
//     -> {samples: number[], unit: 'ms' | 'MB', evidence: {...}}
//
// Errors reject with an Error whose message says what failed (devicelab turns it into
// ProbeFailed). Nothing here logs a password, a key or a token.
import type { SupabaseClient, SupabaseClientOptions } from '@supabase/supabase-js'
import {
  cacheConversations,
  cachePrepare,
  cacheQuery50,
  cacheSearch,
  closeCache,
} from './probes/cache'
import { backgroundPrepare, backgroundResult } from './probes/background'
import { messageDelivery, subscriptionSetup } from './probes/delivery'
import { loadConversations, loadMessages, releaseRetained } from './probes/memory'
import { conversationList, messageSearch } from './probes/queries'
import { reconnectOnline, reconnectPrepare, reconnectResult } from './probes/reconnect'
import { storageDownload, storageUpload } from './probes/storage'
import type { LocalSqlite } from './sqlite'
import {
  API_VERSION,
  type Params,
  type Probe,
  type ProbeConfig,
  type ProbeContext,
  type ProbeResult,
  type SignedInUser,
} from './types'
import { errorText } from './util'

export { API_VERSION } from './types'
export type { LocalDatabase, LocalSqlite } from './sqlite'
export type { ProbeConfig, ProbeResult, Unit, UserCredentials } from './types'

/** Every probe by id: the ids devicelab's scenarios call. */
export const PROBES: Record<string, Probe> = {
  message_delivery: messageDelivery,
  subscription_setup: subscriptionSetup,
  conversation_list: conversationList,
  message_search: messageSearch,
  storage_upload: storageUpload,
  storage_download: storageDownload,
  'reconnect.prepare': reconnectPrepare,
  'reconnect.online': reconnectOnline,
  'reconnect.result': reconnectResult,
  'memory.conversations': loadConversations,
  'memory.messages': loadMessages,
  'memory.release': releaseRetained,
  'background.prepare': backgroundPrepare,
  'background.result': backgroundResult,
  'local_cache.prepare': cachePrepare,
  'local_cache.query_50': cacheQuery50,
  'local_cache.search': cacheSearch,
  'local_cache.conversations': cacheConversations,
}

export type CreateClient = (
  url: string,
  key: string,
  options: SupabaseClientOptions<'public'>,
) => SupabaseClient

export interface Dependencies {
  /** supabase-js's createClient (a fake in unit tests). */
  createClient: CreateClient
  /** The app's own client options (realtime reconnect policy, ...); auth is set here. */
  clientOptions?: SupabaseClientOptions<'public'>
  now?: () => number
  sleep?: (ms: number) => Promise<void>
  /** The app's local SQLite (@capacitor-community/sqlite; sql.js in unit tests). */
  sqlite?: LocalSqlite
  /** What the app reports about itself (build, platform), echoed by info(). */
  app?: Record<string, unknown>
}

export interface DevicelabApi {
  readonly version: number
  /** The probe ids this build has. */
  probes(): string[]
  /** The app and API versions, and how many users are signed in. */
  info(): Record<string, unknown>
  /** Sign the users in (one client each); replaces an earlier configuration. */
  configure(config: ProbeConfig): Promise<{ version: number; users: string[] }>
  run(probeId: string, params?: Params): Promise<ProbeResult>
  /** Sign out, close every channel, drop retained data. */
  reset(): Promise<void>
}

function checkConfig(config: ProbeConfig): void {
  if (!config || typeof config !== 'object') throw new Error('configure() needs an object')
  if (typeof config.supabaseUrl !== 'string' || !/^https?:\/\//.test(config.supabaseUrl)) {
    throw new Error('configure(): supabaseUrl must be an http(s) URL')
  }
  if (typeof config.anonKey !== 'string' || config.anonKey.length === 0) {
    throw new Error('configure(): anonKey is required')
  }
  if (!Array.isArray(config.users) || config.users.length === 0) {
    throw new Error('configure(): users must list at least one {email, password}')
  }
}

/** A devicelab API over the given dependencies (the app passes supabase-js's createClient). */
export function createDevicelab(deps: Dependencies): DevicelabApi {
  const ctx: ProbeContext = {
    users: [],
    now: deps.now ?? (() => performance.now()),
    sleep: deps.sleep ?? ((ms) => new Promise((resolve) => setTimeout(resolve, ms))),
    retained: [],
    state: new Map(),
    sqlite: deps.sqlite,
  }

  async function reset(): Promise<void> {
    const users = ctx.users.splice(0)
    ctx.retained.length = 0
    await closeCache(ctx)
    ctx.state.clear()
    for (const user of users) {
      await user.client.removeAllChannels()
      await user.client.auth.signOut({ scope: 'local' })
    }
  }

  return {
    version: API_VERSION,
    probes: () => Object.keys(PROBES),
    info: () => ({ version: API_VERSION, users: ctx.users.length, app: deps.app ?? {} }),
    reset,
    async configure(config) {
      checkConfig(config)
      await reset()
      const users: SignedInUser[] = []
      for (const [i, credentials] of config.users.entries()) {
        const client = deps.createClient(config.supabaseUrl, config.anonKey, {
          ...deps.clientOptions,
          auth: {
            persistSession: false,
            autoRefreshToken: true,
            detectSessionInUrl: false,
            storageKey: `devicelab-user-${i + 1}`,
          },
        })
        const { data, error } = await client.auth.signInWithPassword({
          email: credentials.email,
          password: credentials.password,
        })
        if (error || !data.user) {
          throw new Error(`sign-in of user ${i + 1} failed: ${error ? errorText(error) : 'no user'}`)
        }
        users.push({ id: data.user.id, client })
      }
      ctx.users.push(...users)
      return { version: API_VERSION, users: users.map((u) => u.id) }
    },
    async run(probeId, params = {}) {
      const probe = PROBES[probeId]
      if (!probe) {
        throw new Error(`unknown probe ${JSON.stringify(probeId)}; known: ${Object.keys(PROBES).join(', ')}`)
      }
      if (ctx.users.length === 0) throw new Error('not configured: call configure() first')
      return probe(ctx, params)
    },
  }
}

/** Create the API and publish it as ``target.devicelab`` (the app passes window). */
export function install(target: { devicelab?: DevicelabApi }, deps: Dependencies): DevicelabApi {
  const api = createDevicelab(deps)
  target.devicelab = api
  return api
}
