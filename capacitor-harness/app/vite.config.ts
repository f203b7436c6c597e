import { defineConfig } from 'vite'

// base './': the build works from any folder or URL (devicelab's static server, a
// Capacitor WebView's file origin).
export default defineConfig({
  base: './',
  build: { outDir: 'dist', emptyOutDir: true, target: 'es2022', sourcemap: false },
})
