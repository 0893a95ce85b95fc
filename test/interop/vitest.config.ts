import { defineConfig, type ViteUserConfig } from "vitest/config";
import { BaseSequencer, type TestSpecification } from "vitest/node";

/** The dissection of every capture runs after the files that make the captures. */
const LAST = /dissect-captures\.test\.ts$/;

class CapturesLast extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const sorted = await super.sort(files);
    return [...sorted.filter((f) => !LAST.test(f.moduleId)), ...sorted.filter((f) => LAST.test(f.moduleId))];
  }
}

// The interop suite: real NBD peers against our example server and client. Run by `npm run test:interop`
// (scripts/interop.sh), never by `npm test`. test/interop/dissect-captures.test.ts dissects every capture
// the other files wrote, so it must run last, one file at a time.
const config: ViteUserConfig = defineConfig({
  test: {
    root: new URL("../..", import.meta.url).pathname,
    include: ["test/interop/**/*.test.ts"],
    testTimeout: 120_000,
    hookTimeout: 90_000,
    teardownTimeout: 30_000,
    // Peers, tcpdump and our servers share two cores: one file at a time keeps timings honest, and the
    // dissection (last, see CapturesLast) sees every capture.
    fileParallelism: false,
    sequence: { sequencer: CapturesLast },
    pool: "forks",
  },
});

export default config;
