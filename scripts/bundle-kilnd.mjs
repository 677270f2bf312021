// kilnd as one file: dist/bin/kilnd.js, compiled by tsc, is replaced by a bundle of itself and
// its dependencies. Start-up time is wake time, and Node spends most of kilnd's start-up finding
// and reading a few hundred module files (measured side by side: ~320 ms to the first answered
// RPC unbundled, ~215 ms bundled). Modules kilnd loads later (execa, prom-client, the fast path's
// parser) stay lazy inside the bundle.
import { build } from "esbuild";

await build({
  entryPoints: ["dist/bin/kilnd.js"],
  outdir: "dist/bin",
  // What kilnd imports after it answers goes in chunks of its own, not parsed at start-up.
  splitting: true,
  chunkNames: "kilnd-chunks/[name]-[hash]",
  allowOverwrite: true,
  bundle: true,
  platform: "node",
  format: "esm",
  target: "node20",
  logLevel: "warning",
  sourcemap: true,
  // CommonJS dependencies (pino, prom-client) call require(); an ES module bundle needs one.
  banner: { js: "import { createRequire as __kilnCreateRequire } from 'node:module'; const require = __kilnCreateRequire(import.meta.url);" },
});
