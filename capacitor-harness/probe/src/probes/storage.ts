// image_upload_1mb / image_download_1mb (and the 10 MB video pair): Supabase Storage
// through supabase-js, with incompressible bytes, timed from the call to the last byte.
import type { Probe, ProbeContext, SignedInUser } from '../types'
import { errorText, num, round, str, unique } from '../util'

const CHUNK = 65_536 // crypto.getRandomValues fills at most 64 KiB per call

/** ``size`` random bytes: nothing on the way can compress them. */
export function randomBytes(size: number): Uint8Array<ArrayBuffer> {
  const bytes = new Uint8Array(size)
  for (let offset = 0; offset < size; offset += CHUNK) {
    crypto.getRandomValues(bytes.subarray(offset, Math.min(size, offset + CHUNK)))
  }
  return bytes
}

function userA(ctx: ProbeContext): SignedInUser {
  const [a] = ctx.users
  if (!a) throw new Error('no signed-in user: call configure() first')
  return a
}

interface Transfer {
  bucket: string
  bytes: number
  contentType: string
  count: number
  intervalMs: number
  prefix: string
}

function transfer(params: Record<string, unknown>, user: SignedInUser): Transfer {
  const bytes = num(params, 'bytes', 1_048_576)
  if (bytes <= 0) throw new Error('parameter bytes must be positive')
  return {
    bucket: str(params, 'bucket', 'media'),
    bytes,
    contentType: str(params, 'contentType', 'image/jpeg'),
    count: num(params, 'count', 3),
    intervalMs: num(params, 'intervalMs', 200),
    prefix: `${user.id}/devicelab/${unique('probe')}`,
  }
}

async function upload(user: SignedInUser, t: Transfer, path: string): Promise<void> {
  const body = new Blob([randomBytes(t.bytes)], { type: t.contentType })
  const { error } = await user.client.storage
    .from(t.bucket)
    .upload(path, body, { upsert: true, contentType: t.contentType })
  if (error) throw new Error(`upload of ${path} failed: ${errorText(error)}`)
}

async function removeAll(user: SignedInUser, t: Transfer, paths: string[]): Promise<void> {
  if (paths.length > 0) await user.client.storage.from(t.bucket).remove(paths)
}

function kbps(bytes: number, samples: number[]): number[] {
  return samples.map((ms) => round((bytes * 8) / ms))
}

/** Each sample: one upload of a new object of ``bytes`` random bytes. */
export const storageUpload: Probe = async (ctx, params) => {
  const a = userA(ctx)
  const t = transfer(params, a)
  const samples: number[] = []
  const paths: string[] = []
  try {
    for (let i = 0; i < t.count; i += 1) {
      const path = `${t.prefix}-${i}.bin`
      paths.push(path)
      const body = new Blob([randomBytes(t.bytes)], { type: t.contentType })
      const started = ctx.now()
      const { error } = await a.client.storage
        .from(t.bucket)
        .upload(path, body, { upsert: true, contentType: t.contentType })
      if (error) throw new Error(`upload failed: ${errorText(error)}`)
      samples.push(round(ctx.now() - started))
      await ctx.sleep(t.intervalMs)
    }
  } finally {
    await removeAll(a, t, paths)
  }
  return {
    samples,
    unit: 'ms',
    evidence: {
      request: `POST /storage/v1/object/${t.bucket}/<path> (multipart, supabase-js)`,
      bytes: t.bytes,
      content_type: t.contentType,
      achieved_kbps: kbps(t.bytes, samples),
    },
  }
}

/**
 * Each sample: one download of a distinct object (uploaded first, untimed), so the
 * browser's cache can never answer.
 */
export const storageDownload: Probe = async (ctx, params) => {
  const a = userA(ctx)
  const t = transfer(params, a)
  const samples: number[] = []
  const paths: string[] = []
  try {
    for (let i = 0; i < t.count; i += 1) {
      const path = `${t.prefix}-${i}.bin`
      paths.push(path)
      await upload(a, t, path)
      await ctx.sleep(t.intervalMs)
      const started = ctx.now()
      const { data, error } = await a.client.storage.from(t.bucket).download(path)
      if (error) throw new Error(`download failed: ${errorText(error)}`)
      const elapsed = ctx.now() - started
      if (!data || data.size !== t.bytes) {
        throw new Error(`download of ${t.bytes} bytes returned ${data?.size ?? 0}`)
      }
      samples.push(round(elapsed))
    }
  } finally {
    await removeAll(a, t, paths)
  }
  return {
    samples,
    unit: 'ms',
    evidence: {
      request: `GET /storage/v1/object/${t.bucket}/<path> (authenticated, supabase-js download)`,
      bytes: t.bytes,
      achieved_kbps: kbps(t.bytes, samples),
      cache: 'a distinct object per sample',
    },
  }
}
