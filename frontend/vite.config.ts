// Vite build of the web app: static files in dist/, served by the gateway at "/".
// Everything is bundled (pdf.js and its worker included): nothing loads from a CDN.
import { defineConfig } from "vite";

export default defineConfig({
  base: "/",
  build: {
    outDir: "dist",
    emptyOutDir: true,
    sourcemap: false,
    chunkSizeWarningLimit: 1500,
  },
  oxc: { jsx: { runtime: "automatic", importSource: "preact" } },
  test: { environment: "jsdom", include: ["src/**/*.test.{ts,tsx}"] },
} as never);
