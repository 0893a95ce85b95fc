import { defineConfig } from "tsup";

export default defineConfig({
  // `start` is the npm bin (dist/start.cjs): it runs the `nbd-codec` bundle with a V8 code cache.
  entry: { mod: "mod.ts", trace: "trace.ts", "nbd-codec": "bin/nbd-codec.ts", start: "bin/start.ts" },
  format: ["esm", "cjs"],
  dts: { entry: { mod: "mod.ts", trace: "trace.ts" } },
  clean: true,
  sourcemap: false,
  target: "es2022",
  treeshake: true,
});
