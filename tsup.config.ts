import { defineConfig } from "tsup";

export default defineConfig({
  entry: { mod: "mod.ts", trace: "trace.ts", "nbd-codec": "bin/nbd-codec.ts" },
  format: ["esm", "cjs"],
  dts: true,
  clean: true,
  sourcemap: false,
  target: "es2022",
  treeshake: true,
});
