import { defineConfig } from "tsup";
import type { Plugin } from "esbuild";

/**
 * `import process from "node:process"` in the command line's bundle: the global `process`, which is what
 * that module's default export is under Node. esbuild's interop for a CommonJS module's default import
 * (`__toESM`) would instead copy every property of `process` onto a new object at each importing module's
 * start: 0.27 ms each in a script of its own, three of them on every `dissect` run (bench/RESULTS.md).
 * Deno runs the sources, not this bundle; scripts/check.sh fails if the copy comes back.
 */
const processAsGlobal: Plugin = {
  name: "node-process-as-global",
  setup(build) {
    build.onResolve(
      { filter: /^node:process$/ },
      () => ({ path: "node:process", namespace: "process-global" }),
    );
    build.onLoad({ filter: /.*/, namespace: "process-global" }, () => ({
      contents: "export default globalThis.process;",
      loader: "js",
    }));
  },
};

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
    // Our plugin must see `node:process` before tsup's, which strips the `node:` of every import.
    removeNodeProtocol: false,
    esbuildPlugins: [processAsGlobal],
  },
]);
