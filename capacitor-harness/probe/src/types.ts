// The contract between devicelab (Python, devicelab/harness.py) and the probes in the app.
// Everything that crosses the JS channel is plain JSON: no functions, no Dates, no Blobs.
import type { SupabaseClient } from '@supabase/supabase-js'
import type { LocalSqlite } from './sqlite'

/** The version of the window.devicelab API; devicelab/harness.py checks it. */
export const API_VERSION = 1

export type Unit = 'ms' | 'MB' | 's'

/** What every probe returns: the samples it measured, their unit, and how it measured. */
export interface ProbeResult {
  samples: number[]
  unit: Unit
  evidence: Record<string, unknown>
}

export interface UserCredentials {
  email: string
  password: string
}

/** The argument of window.devicelab.configure(). */
export interface ProbeConfig {
  supabaseUrl: string
  anonKey: string
  /** Signed in in order: users[0] is "A" (the sender), users[1] is "B" (the receiver). */
  users: UserCredentials[]
}

/** A signed-in user of the app: one supabase client each, as two phones would have. */
export interface SignedInUser {
  id: string
  client: SupabaseClient
}

/** What a probe gets besides its params. */
export interface ProbeContext {
  users: SignedInUser[]
  now: () => number
  sleep: (ms: number) => Promise<void>
  /** The app's own state, where probes that load data keep it (as the UI would). */
  retained: unknown[]
  /** State a multi-step probe keeps between its steps (e.g. reconnect.*, local_cache.*). */
  state: Map<string, unknown>
  /** The app's local SQLite (the local_cache.* probes); absent in a build without one. */
  sqlite?: LocalSqlite
}

export type Params = Record<string, unknown>
export type Probe = (ctx: ProbeContext, params: Params) => Promise<ProbeResult>
