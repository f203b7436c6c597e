// The app's local SQLite: @capacitor-community/sqlite, adapted to the probes' LocalSqlite.
// On a phone the plugin is native SQLite; on the web (and the WebView stand-ins) it is
// jeep-sqlite, a custom element running sql.js (SQLite compiled to WASM) that loads
// ./assets/sql-wasm.wasm, which vite.config.ts copies into the build.
import { CapacitorSQLite, SQLiteConnection, type SQLiteDBConnection } from '@capacitor-community/sqlite'
import { Capacitor } from '@capacitor/core'
import type { LocalDatabase, LocalSqlite } from '@devicelab/probe'

/** Where jeep-sqlite finds sql-wasm.wasm: next to the page, whatever URL serves it. */
const WASM_DIR = `${import.meta.env.BASE_URL}assets`

let started: Promise<SQLiteConnection> | null = null

// The web store is started on the first open, not at page load: a run that never uses
// the cache does not load the WASM.
async function start(): Promise<SQLiteConnection> {
  const sqlite = new SQLiteConnection(CapacitorSQLite)
  if (Capacitor.getPlatform() === 'web') {
    const { defineCustomElements } = await import('jeep-sqlite/loader')
    defineCustomElements(window)
    const element = document.createElement('jeep-sqlite')
    element.setAttribute('wasmpath', WASM_DIR)
    document.body.appendChild(element)
    await customElements.whenDefined('jeep-sqlite')
    await sqlite.initWebStore()
  }
  return sqlite
}

function adapt(db: SQLiteDBConnection, close: () => Promise<void>): LocalDatabase {
  return {
    async execute(sql) {
      await db.execute(sql, true)
    },
    async executeMany(sql, rows) {
      if (rows.length === 0) return
      // One bridge call for every row (values as an array of arrays), in one transaction.
      await db.executeSet([{ statement: sql, values: rows }], true)
    },
    async query(sql, values = []) {
      const result = await db.query(sql, values)
      return (result.values ?? []) as Array<Record<string, unknown>>
    },
    close,
  }
}

/** The LocalSqlite of this build (one SQLiteConnection per page). */
export const localSqlite: LocalSqlite = {
  engine:
    Capacitor.getPlatform() === 'web'
      ? '@capacitor-community/sqlite web (jeep-sqlite, sql.js WASM)'
      : `@capacitor-community/sqlite native (${Capacitor.getPlatform()})`,
  async open(name) {
    started ??= start()
    const sqlite = await started
    await sqlite.checkConnectionsConsistency().catch(() => undefined)
    if ((await sqlite.isConnection(name, false)).result) await sqlite.closeConnection(name, false)
    const db = await sqlite.createConnection(name, false, 'no-encryption', 1, false)
    await db.open()
    return adapt(db, () => sqlite.closeConnection(name, false))
  },
}
