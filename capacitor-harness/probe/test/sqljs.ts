// A LocalSqlite over sql.js (SQLite compiled to WASM, the engine jeep-sqlite runs on the
// web), in memory: the probes' unit tests run real SQL on a real SQLite.
import initSqlJs, { type Database, type SqlValue } from 'sql.js'
import type { LocalDatabase, LocalSqlite } from '../src/sqlite'

export interface SqlJs extends LocalSqlite {
  /** The databases opened so far, and whether each is closed. */
  opened: Array<{ name: string; closed: boolean }>
}

function adapt(db: Database, onClose: () => void): LocalDatabase {
  return {
    async execute(sql) {
      db.exec(sql)
    },
    async executeMany(sql, rows) {
      db.exec('BEGIN')
      const statement = db.prepare(sql)
      try {
        for (const row of rows) statement.run(row as SqlValue[])
        db.exec('COMMIT')
      } catch (error) {
        db.exec('ROLLBACK')
        throw error
      } finally {
        statement.free()
      }
    },
    async query(sql, values = []) {
      const statement = db.prepare(sql)
      try {
        statement.bind(values as SqlValue[])
        const rows: Array<Record<string, unknown>> = []
        while (statement.step()) rows.push(statement.getAsObject())
        return rows
      } finally {
        statement.free()
      }
    },
    async close() {
      db.close()
      onClose()
    },
  }
}

export async function sqlJs(): Promise<SqlJs> {
  const SQL = await initSqlJs()
  const opened: SqlJs['opened'] = []
  return {
    engine: 'sql.js (vitest)',
    opened,
    async open(name) {
      const entry = { name, closed: false }
      opened.push(entry)
      return adapt(new SQL.Database(), () => {
        entry.closed = true
      })
    },
  }
}
