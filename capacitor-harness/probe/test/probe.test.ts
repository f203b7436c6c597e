import { describe, expect, it } from 'vitest'
import { API_VERSION, type DevicelabApi, PROBES, install } from '../src/index'
import { FakeServer, type ServerOptions } from './fake'

const USERS = [
  { email: 'a@example.com', password: 'password123' },
  { email: 'b@example.com', password: 'password123' },
]
const CONFIG = { supabaseUrl: 'http://127.0.0.1:9', anonKey: 'anon-key', users: USERS }

async function configured(options: ServerOptions = {}): Promise<{ api: DevicelabApi; server: FakeServer }> {
  const server = new FakeServer(options)
  const target: { devicelab?: DevicelabApi } = {}
  const api = install(target, { createClient: () => server.client() })
  expect(target.devicelab).toBe(api)
  await api.configure(CONFIG)
  return { api, server }
}

describe('window.devicelab', () => {
  it('publishes a versioned API with every probe', () => {
    const target: { devicelab?: DevicelabApi } = {}
    const api = install(target, { createClient: () => new FakeServer().client() })
    expect(api.version).toBe(API_VERSION)
    expect(api.probes()).toEqual(Object.keys(PROBES))
    expect(api.probes()).toContain('message_delivery')
  })

  it('refuses a bad configuration and unknown probes, with a message', async () => {
    const api = install({}, { createClient: () => new FakeServer().client() })
    await expect(api.configure({ ...CONFIG, supabaseUrl: 'nope' })).rejects.toThrow(/supabaseUrl/)
    await expect(api.run('message_delivery', {})).rejects.toThrow(/not configured/)
    await api.configure(CONFIG)
    await expect(api.run('no_such_probe')).rejects.toThrow(/unknown probe "no_such_probe"/)
    await expect(api.run('message_delivery', {})).rejects.toThrow(/conversationId is required/)
  })

  it('reports a failed sign-in without the password', async () => {
    const api = install({}, { createClient: () => new FakeServer().client() })
    const bad = { ...CONFIG, users: [{ email: 'a@example.com', password: 's3cret-pw' }] }
    const error = await api.configure(bad).catch((e: Error) => e)
    expect(String(error)).toMatch(/sign-in of user 1 failed/)
    expect(String(error)).not.toContain('s3cret-pw')
  })

  it('signs each user in with a client of its own', async () => {
    const { api, server } = await configured()
    expect(server.signIns).toEqual(['a@example.com', 'b@example.com'])
    expect(api.info()).toMatchObject({ version: API_VERSION, users: 2 })
  })
})

describe('message_delivery', () => {
  it('times each message from A to B, matching by content', async () => {
    const { api } = await configured({ sendDelayMs: 5, deliverDelayMs: 20 })
    const result = await api.run('message_delivery', { conversationId: 'c1', count: 3, intervalMs: 0 })
    expect(result.unit).toBe('ms')
    expect(result.samples).toHaveLength(3)
    for (const sample of result.samples) expect(sample).toBeGreaterThanOrEqual(20)
    expect(result.evidence).toMatchObject({ sent: 3, received: 3, lost: 0 })
  })

  it('counts a message that never arrives as lost, not as a sample', async () => {
    const { api } = await configured({ drop: (content) => content.includes('delivery 2-') })
    const result = await api.run('message_delivery', {
      conversationId: 'c1',
      count: 3,
      intervalMs: 0,
      timeoutMs: 100,
    })
    expect(result.samples).toHaveLength(2)
    expect(result.evidence).toMatchObject({ lost: 1, received: 2 })
  })
})

describe('subscription_setup', () => {
  it('waits for "Subscribed to PostgreSQL", not for phx_reply', async () => {
    const { api } = await configured({ replyDelayMs: 2, systemDelayMs: 40 })
    const result = await api.run('subscription_setup', { conversationId: 'c1', count: 2, intervalMs: 0 })
    expect(result.samples).toHaveLength(2)
    const replies = result.evidence.phx_reply_ms as number[]
    expect(result.evidence.socket_open_before).toEqual([false, false])
    result.samples.forEach((sample, i) => {
      expect(sample).toBeGreaterThanOrEqual(40)
      expect(replies[i]).toBeLessThan(sample)
    })
  })
})

describe('storage', () => {
  it('uploads incompressible bytes and cleans up', async () => {
    const { api, server } = await configured()
    const result = await api.run('storage_upload', { bytes: 200_000, count: 2, intervalMs: 0 })
    expect(result.samples).toHaveLength(2)
    expect(result.evidence).toMatchObject({ bytes: 200_000 })
    expect(server.objects.size).toBe(0)
  })

  it('fails a download that returns the wrong size', async () => {
    const { api } = await configured({ objectSize: () => 10 })
    await expect(api.run('storage_download', { bytes: 1000, count: 1 })).rejects.toThrow(
      /returned 10/,
    )
  })
})

describe('reconnect', () => {
  it('times from online to resubscribed and a message through', async () => {
    const { api, server } = await configured({ deliverDelayMs: 5 })
    await api.run('reconnect.prepare', { conversationId: 'c1' })
    await api.run('reconnect.online', {})
    const channel = server.channels.at(-1)
    setTimeout(() => void channel?.join(), 30) // the rejoin after the link is back
    const result = await api.run('reconnect.result', {})
    expect(result.samples).toHaveLength(1)
    expect(result.samples[0]).toBeGreaterThanOrEqual(30)
    expect(result.evidence.resubscribed_ms as number).toBeGreaterThanOrEqual(30)
    expect(result.evidence.send_attempts).toBe(1)
  })

  it('needs prepare before online', async () => {
    const { api } = await configured()
    await expect(api.run('reconnect.online', {})).rejects.toThrow(/prepare was not called/)
  })
})
