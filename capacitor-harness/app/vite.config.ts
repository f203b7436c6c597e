import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname } from 'node:path'
import { type Plugin, defineConfig } from 'vite'

const require = createRequire(import.meta.url)

/**
 * Puts sql.js's sql-wasm.wasm into the build as assets/sql-wasm.wasm, where jeep-sqlite
 * (the web side of @capacitor-community/sqlite) loads it from (src/sqlite.ts). It is taken
 * from the sql.js that jeep-sqlite itself resolves: jeep-sqlite bundles sql.js's
 * JavaScript, and the WASM must be the one built with it (package.json pins the version).
 */
function sqlWasm(): Plugin {
  const jeep = dirname(require.resolve('jeep-sqlite/package.json'))
  const wasm = require.resolve('sql.js/dist/sql-wasm.wasm', { paths: [jeep] })
  return {
    name: 'devicelab-sql-wasm',
    // In `vite dev` the same file is served at the same path.
    configureServer(server) {
      server.middlewares.use('/assets/sql-wasm.wasm', (_req, res) => {
        res.setHeader('Content-Type', 'application/wasm')
        res.end(readFileSync(wasm))
      })
    },
    generateBundle() {
      this.emitFile({ type: 'asset', fileName: 'assets/sql-wasm.wasm', source: readFileSync(wasm) })
    },
  }
}

// base './': the build works from any folder or URL (devicelab's static server, a
// Capacitor WebView's file origin).
export default defineConfig({
  base: './',
  plugins: [sqlWasm()],
  // jeep-sqlite's loader imports its component lazily; left to esbuild's pre-bundling in
  // `vite dev` that import is lost.
  optimizeDeps: { exclude: ['jeep-sqlite'] },
  build: { outDir: 'dist', emptyOutDir: true, target: 'es2022', sourcemap: false },
})
