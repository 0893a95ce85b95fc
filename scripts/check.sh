#!/usr/bin/env bash
# Every check CI runs after the tests: typecheck, lint, Deno checks, packaging checks, vectors.
set -euo pipefail
cd "$(dirname "$0")/.."
export NPM_CONFIG_LOGLEVEL=error
step() { printf '\n== %s\n' "$*"; }
step "tsc --noEmit";            npx tsc --noEmit -p .
step "deno check";              npx deno check mod.ts trace.ts
step "deno lint";               npx deno lint
step "deno fmt --check";        npx deno fmt --check
step "deno doc --lint";         npx deno doc --lint mod.ts trace.ts
step "deno test --doc";         npx deno test --doc --allow-read mod.ts trace.ts codec/
step "deno publish --dry-run";  npx deno publish --dry-run --allow-dirty
step "tsup build";              npx tsup
step "CLI bundle is ASCII (a non-ASCII byte, even in a kept comment, makes V8 hold the 580 KB source as a two-byte string: +2.5 ms at every start)"
if LC_ALL=C grep -n -P '[^\x00-\x7F]' dist/nbd-codec.cjs dist/start.cjs | cut -c1-200; then echo "non-ASCII bytes in the CLI bundle" >&2; exit 1; fi
step "CLI bundle takes process as the global (tsup.config.ts: esbuild's interop copies its every property at each import, 0.27 ms each)"
if grep -n '__toESM(require("node:process")\|__toESM(require("process")' dist/nbd-codec.cjs dist/start.cjs; then echo "node:process goes through __toESM in the CLI bundle" >&2; exit 1; fi
grep -q 'globalThis.process' dist/nbd-codec.cjs
step "npm tarball contents (after the build)"; NBD_CODEC_REQUIRE_DIST=1 npx vitest run test/package_files.test.ts
step "publint";                 npx publint --strict
step "attw --pack";             npx attw --pack . --profile node16
step "vector checker";          npx deno run -A scripts/check-vectors.ts
step "README code blocks type-check"; npx deno run -A scripts/check-readme.ts README.md
step "dist smoke test (Node ESM, Node CJS, Deno)"
node --input-type=module -e 'import * as m from "nbd-codec"; if (typeof m.decodeGreeting !== "function") process.exit(1); const t = await import("nbd-codec/trace"); console.log("esm ok", Object.keys(m).length, "exports;", Object.keys(t).length, "trace exports")'
node -e 'const m = require("nbd-codec"); if (typeof m.decodeGreeting !== "function") process.exit(1); require("nbd-codec/trace"); console.log("cjs ok")'
npx deno eval 'import * as m from "./dist/mod.js"; if (typeof m.decodeGreeting !== "function") Deno.exit(1); console.log("deno dist ok")'

step "npm bin (dist/start.cjs): same output as the bundle, compile cache written, used, and renewed when bad"
cache=$(mktemp -d)
trap 'rm -rf "$cache"' EXIT
run_bin() { NODE_COMPILE_CACHE="$cache/dir" NODE_DEBUG=nbd-codec node dist/start.cjs dissect 2>>"$cache/log"; }
node dist/nbd-codec.cjs dissect > "$cache/expected.txt"
run_bin > "$cache/1.txt"
run_bin > "$cache/2.txt"
for f in "$cache"/dir/*.v8cache; do head -c 4096 /dev/urandom > "$f"; done
run_bin > "$cache/3.txt"
run_bin > "$cache/4.txt"
for i in 1 2 3 4; do cmp "$cache/expected.txt" "$cache/$i.txt"; done
states=$(cut -d' ' -f4 "$cache/log" | tr '\n' ' ')
[ "$states" = "absent written used rejected written used " ] || { echo "compile cache states: $states" >&2; exit 1; }
npx deno run -A dist/start.cjs dissect | cmp "$cache/expected.txt" -
echo "bin ok: $(wc -l < "$cache/expected.txt") lines, cache absent, written, used, rejected, written, used; Deno ok"

step "npm bin: the bundle's source reaches V8 as written (a #! line, non-ASCII text, CommonJS's arguments)"
fake="$cache/fake"
mkdir -p "$fake"
cp dist/start.cjs "$fake/"
printf '#!/usr/bin/env node\nprocess.stdout.write(["caf\303\251 \342\206\222", typeof require, typeof module.exports, __filename === require("path").join(__dirname, "nbd-codec.cjs")].join(" ") + "\\n");\n' > "$fake/nbd-codec.cjs"
want=$(printf 'caf\303\251 \342\206\222 function object true')
for i in 1 2; do
  got=$(NODE_COMPILE_CACHE="$cache/fake-cache" NODE_DEBUG=nbd-codec node "$fake/start.cjs" dissect 2>>"$cache/fake.log")
  [ "$got" = "$want" ] || { echo "bin with a non-ASCII bundle printed: $got" >&2; exit 1; }
done
grep -q 'compile cache used' "$cache/fake.log" || { echo "the non-ASCII bundle's cache was not used: $(cat "$cache/fake.log")" >&2; exit 1; }
echo "non-ASCII bundle ok, twice (cache written, then used)"

step "npm bin: a cold run (capture file of 4 MiB or more) sets V8's budget through the binding, without node:v8 (2 ms of streams) and without a warning"
npx deno run -A bench/dissect/generate.ts "$cache/cold.pcap" 5 >/dev/null
# A preload that records what reaches V8's flags through process.binding("v8"), and whether node:v8 was loaded.
cat > "$cache/hook.cjs" <<'HOOK'
const fs = require("fs");
const binding = process.binding;
const flags = [];
const write = () => {
  const v8 = process.moduleLoadList.includes("NativeModule v8");
  fs.writeFileSync(process.env.HOOK_OUT, `${flags.join(" ")} node:v8=${v8}\n`);
};
fs.writeFileSync(process.env.HOOK_OUT, "binding not used\n");
process.binding = function (name) {
  const b = binding.call(this, name);
  if (name !== "v8") return b;
  // After the bin's own exit handlers (registered before the first use), which set the budget back.
  if (flags.length === 0) process.on("exit", write);
  return { ...b, setFlagsFromString: (f) => { flags.push(f); b.setFlagsFromString(f); } };
};
HOOK
for opts in "" "--throw-deprecation" "--pending-deprecation"; do
  HOOK_OUT="$cache/hook.out" NODE_OPTIONS="$opts" node -r "$cache/hook.cjs" dist/start.cjs dissect "$cache/cold.pcap" >/dev/null 2>"$cache/cold.err"
  got=$(cat "$cache/hook.out")
  [ "$got" = "--interrupt-budget=270336 --interrupt-budget=1081344 --interrupt-budget=67584 node:v8=false" ] || { echo "cold run ($opts): $got" >&2; exit 1; }
  if [ -s "$cache/cold.err" ]; then echo "cold run ($opts) wrote to stderr: $(cat "$cache/cold.err")" >&2; exit 1; fi
done
echo "cold budget set, raised for a short run, and reset through the binding; node:v8 not loaded; stderr empty (also with --throw-deprecation, --pending-deprecation)"
# 256-byte WRITEs (27 281 packets): the first headers predict a long run (bin/_readahead.ts, sniffCapture),
# which starts warm.
npx deno run -A bench/dissect/generate.ts "$cache/long.pcap" 6 --write-size 256 >/dev/null
HOOK_OUT="$cache/hook.out" node -r "$cache/hook.cjs" dist/start.cjs dissect "$cache/long.pcap" >/dev/null
got=$(cat "$cache/hook.out")
[ "$got" = "binding not used" ] || { echo "long run: $got" >&2; exit 1; }
echo "a run predicted long from its first headers leaves V8's budget alone"

step "npm bin: a capture file's first reads start before the command line loads (prefetch), with the same output"
npx deno run -A bench/dissect/generate.ts "$cache/big.pcap" 12 >/dev/null
for runtime in "node dist/start.cjs" "npx deno run -A dist/start.cjs"; do
  for mode in "dissect" "dissect --json" "stats" "dissect --summary --count 7"; do
    node dist/nbd-codec.cjs $mode "$cache/big.pcap" > "$cache/pf.want" 2>/dev/null
    NODE_DEBUG=nbd-codec $runtime $mode "$cache/big.pcap" 2>"$cache/pf.log" | cmp "$cache/pf.want" -
    grep -qx "nbd-codec: prefetch of $cache/big.pcap" "$cache/pf.log" ||
      { echo "$runtime $mode: no prefetch: $(cat "$cache/pf.log")" >&2; exit 1; }
  done
done
# Not for a capture under 4 MiB, nor for standard input.
NODE_DEBUG=nbd-codec node dist/start.cjs dissect >/dev/null 2>"$cache/pf.log"
NODE_DEBUG=nbd-codec node dist/start.cjs dissect - <"$cache/big.pcap" >/dev/null 2>>"$cache/pf.log"
if grep prefetch "$cache/pf.log"; then echo "prefetch of the sample or standard input" >&2; exit 1; fi
echo "prefetch: Node and Deno, dissect (text, JSON, summary) and stats, same output as the bundle run directly"
# libuv's pool has one thread for dissect and stats, two for stats of a long run of large packets (400 MB of
# 64 KiB WRITEs; bin/_readahead.ts, readThreads): threads the run creates, counted by strace, are three (two)
# fewer than with the four the user may still ask for.
npx deno run -A bench/dissect/generate.ts "$cache/huge.pcap" 400 >/dev/null
# threads ENV COMMAND...: ENV is env(1)'s arguments, as one word list.
threads() {
  local e=$1
  shift
  # shellcheck disable=SC2086
  env $e strace -f -qq -e trace=clone,clone3 node dist/start.cjs "$@" 2>&1 >/dev/null | grep -cE "clone3?\("
}
for run in "dissect $cache/big.pcap:3" "stats $cache/big.pcap:3" "dissect $cache/huge.pcap:3" "stats $cache/huge.pcap:2" \
  "dissect vectors/captures/qemu10-ext-io.pcap:3" "stats vectors/captures/qemu10-ext-io.pcap:3"; do
  fewer=${run##*:}
  run=${run%:*}
  # shellcheck disable=SC2086
  ours=$(threads "-u UV_THREADPOOL_SIZE" $run)
  # shellcheck disable=SC2086
  four=$(threads "UV_THREADPOOL_SIZE=4" $run)
  [ $((four - ours)) = "$fewer" ] ||
    { echo "pool threads of $run: $ours, with UV_THREADPOOL_SIZE=4 $four (want $fewer fewer)" >&2; exit 1; }
done
rm -f "$cache/huge.pcap"
echo "one pool thread for a capture file, large (prefetched) or not, two for stats of a long run of large packets"
# A code cache for each kind of run (start.ts, runKind): the first run of a kind finds none and writes its
# own; later runs of the kind use theirs.
kinds() {
  NODE_COMPILE_CACHE="$cache/kinds" NODE_DEBUG=nbd-codec node dist/start.cjs "$@" 2>&1 >/dev/null |
    awk '/^nbd-codec: compile cache / { k = $5 ~ /-short\.v8cache$/ ? "-short" : $5 ~ /-long\.v8cache$/ ? "-long" : ""; printf "%s%s ", $4, k }'
}
got=""
for f in vectors/captures/qemu10-ext-io.pcap "$cache/big.pcap" "$cache/big.pcap" "$cache/long.pcap" "$cache/long.pcap" vectors/captures/qemu10-ext-io.pcap; do
  got="$got$(kinds dissect "$f")/ "
done
# stats writes no cache: before a dissect run of its kind it uses the small captures' cache.
rm -f "$cache"/kinds/*-long.v8cache
got="$got$(kinds stats "$cache/long.pcap")/ "
want="absent written / absent-short written-short / used-short / absent-long written-long / used-long / used / used / "
[ "$got" = "$want" ] || { echo "code caches by kind: $got (want $want)" >&2; exit 1; }
echo "a code cache for small captures, large short runs and large long runs"

step "npm bin: dissect loads no node:module, node:os or AbortController (10 M instructions of module loading, the sample's run is 136 M)"
cat > "$cache/modules.cjs" <<'HOOK'
const fs = require("fs");
process.on("exit", () => fs.writeFileSync(process.env.HOOK_OUT, process.moduleLoadList.join("\n") + "\n"));
HOOK
echo "" > "$cache/empty.cjs"
HOOK_OUT="$cache/modules.empty" node -r "$cache/modules.cjs" "$cache/empty.cjs"
for capture in "" "$cache/cold.pcap"; do
  HOOK_OUT="$cache/modules.bin" node -r "$cache/modules.cjs" dist/start.cjs dissect $capture >/dev/null
  extra=$(comm -13 <(sort "$cache/modules.empty") <(sort "$cache/modules.bin") | tr '\n' ' ')
  for m in "NativeModule module" "NativeModule os" "NativeModule internal/abort_controller"; do
    if grep -qx "$m" "$cache/modules.bin"; then echo "dissect ${capture:-(sample)} loaded $m (beyond an empty script: $extra)" >&2; exit 1; fi
  done
  echo "dissect ${capture:-(sample)}: beyond an empty script, only $extra"
done
# The cache directory from $HOME (read without node:os), then without HOME (os.homedir() looks it up).
env -u NODE_COMPILE_CACHE -u XDG_CACHE_HOME HOME="$cache/home" NODE_DEBUG=nbd-codec node dist/start.cjs dissect \
  >/dev/null 2>"$cache/home.log"
grep -q "compile cache written $cache/home/.cache/nbd-codec/" "$cache/home.log" ||
  { echo "no cache under \$HOME/.cache: $(cat "$cache/home.log")" >&2; exit 1; }
env -u HOME NODE_DEBUG=nbd-codec node dist/start.cjs dissect >/dev/null 2>"$cache/nohome.log"
grep -q "compile cache" "$cache/nohome.log" || { echo "without HOME: $(cat "$cache/nohome.log")" >&2; exit 1; }
echo "cache under \$HOME/.cache, and found without HOME"

step "npm bin: a full non-blocking standard error or output (EAGAIN) is waited for: nothing lost, the process ends after"
python3 scripts/check-full-pipes.py

step "npm bin: a reader that goes away (EPIPE) ends the run with status 0 and nothing on stderr"
for runtime in "node dist/start.cjs" "npx deno run -A bin/nbd-codec.ts"; do
  set +o pipefail
  $runtime dissect 2>"$cache/epipe.err" | { exec <&-; sleep 1; }
  rc=${PIPESTATUS[0]}
  set -o pipefail
  if [ "$rc" != 0 ] || [ -s "$cache/epipe.err" ]; then
    echo "$runtime: status $rc, stderr: $(cat "$cache/epipe.err")" >&2
    exit 1
  fi
  echo "$runtime: status 0, stderr empty"
done

echo
echo "check: all passed"
