// Small helpers shared by the probes: parameter parsing, timeouts, unique names.
import type { Params } from './types'

/** A numeric parameter, or its default; throws on a value that is not a finite number. */
export function num(params: Params, name: string, fallback: number): number {
  const value = params[name]
  if (value === undefined || value === null) return fallback
  if (typeof value !== 'number' || !Number.isFinite(value)) {
    throw new Error(`parameter ${name} must be a number, got ${JSON.stringify(value)}`)
  }
  return value
}

/** A string parameter; throws when it is missing and has no default. */
export function str(params: Params, name: string, fallback?: string): string {
  const value = params[name]
  if (value === undefined || value === null) {
    if (fallback === undefined) throw new Error(`parameter ${name} is required`)
    return fallback
  }
  if (typeof value !== 'string') throw new Error(`parameter ${name} must be a string`)
  return value
}

/** Resolves with ``promise`` or rejects with ``what`` after ``ms``. */
export function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

/** A promise with its resolve/reject exposed (an event some callback will fire). */
export interface Deferred<T> {
  promise: Promise<T>
  resolve: (value: T) => void
  reject: (error: Error) => void
}

export function deferred<T>(): Deferred<T> {
  let resolve!: (value: T) => void
  let reject!: (error: Error) => void
  const promise = new Promise<T>((ok, fail) => {
    resolve = ok
    reject = fail
  })
  return { promise, resolve, reject }
}

let counter = 0
/** A name unique in this page (channels, storage paths, message nonces). */
export function unique(prefix: string): string {
  counter += 1
  return `${prefix}-${Date.now().toString(36)}-${counter}-${Math.random().toString(36).slice(2, 8)}`
}

/** Rounds to 0.1 ms: performance.now() is coarsened anyway, and JSON stays short. */
export function round(value: number): number {
  return Math.round(value * 10) / 10
}

/** The text of a supabase-js error object (or anything thrown). */
export function errorText(error: unknown): string {
  if (error instanceof Error) return error.message
  if (error && typeof error === 'object' && 'message' in error) {
    return String((error as { message: unknown }).message)
  }
  return String(error)
}
