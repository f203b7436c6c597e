// The local SQLite the probes use, as an injected dependency: the app wires
// @capacitor-community/sqlite (native SQLite on a phone, jeep-sqlite + sql.js on the web),
// the unit tests wire sql.js directly. The probes only see these two interfaces.

/** One open SQLite database. Values are bound, never spliced into the SQL. */
export interface LocalDatabase {
  /** Runs statements that return no rows (DDL; several separated by ``;``). */
  execute(sql: string): Promise<void>
  /** Runs one statement once per row of ``rows``, in one transaction (a bulk insert). */
  executeMany(sql: string, rows: unknown[][]): Promise<void>
  /** The rows of one query, as objects keyed by column name. */
  query(sql: string, values?: unknown[]): Promise<Array<Record<string, unknown>>>
  /** Closes the connection; the database itself stays. */
  close(): Promise<void>
}

/** Opens local databases by name. */
export interface LocalSqlite {
  /** Which SQLite this is (the plugin and, on the web, its engine): for the evidence. */
  readonly engine: string
  /** Opens ``name``, creating it if needed; an open connection of that name is closed
   * first (an earlier app session may have left one). */
  open(name: string): Promise<LocalDatabase>
}
