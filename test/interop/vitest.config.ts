import { defineConfig, type ViteUserConfig } from "vitest/config";

// The interop suite: real NBD peers against our example server and client. Run by `npm run test:interop`
// (scripts/interop.sh), never by `npm test`.
const config: ViteUserConfig = defineConfig({
  test: {
    root: new URL("../..", import.meta.url).pathname,
    include: ["test/interop/**/*.test.ts"],
    testTimeout: 120_000,
    hookTimeout: 90_000,
    teardownTimeout: 30_000,
    // Peers, tcpdump and our servers share two cores: one file at a time keeps timings honest.
    fileParallelism: false,
    pool: "forks",
  },
});

export default config;
