import { defineConfig } from "tsup";

// Two builds, run side by side by tsup: the library (ESM and CommonJS, with declarations), and the command
// line (CommonJS only). The library build empties dist/ first, all but the command line's two files, which
// the other build writes.
const CLI_FILES = ["nbd-codec.cjs", "start.cjs"];

export default defineConfig([
  {
    entry: { mod: "mod.ts", trace: "trace.ts" },
    format: ["esm", "cjs"],
    dts: true,
    clean: CLI_FILES.map((f) => `!${f}`),
    sourcemap: false,
    target: "es2022",
    treeshake: true,
  },
  {
    // `start` is the npm bin (dist/start.cjs): it runs the `nbd-codec` bundle with a V8 code cache.
    entry: { "nbd-codec": "bin/nbd-codec.ts", start: "bin/start.ts" },
    format: ["cjs"],
    dts: false,
    clean: false,
    sourcemap: false,
    target: "es2022",
    // esbuild alone, not rollup's tree shaking: rollup hoists every `require` of a Node module to the top of
    // the bundle, so `nbd-codec dissect` loaded node:net and node:child_process for `conform` (about 4 ms of
    // every start); esbuild keeps them inside the lazily imported conform module.
    treeshake: false,
  },
]);
