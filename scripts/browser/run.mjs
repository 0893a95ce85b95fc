// The browser test: the package's ESM build (dist/, from `npx tsup`) decodes every vector and two bundled
// captures in headless Chromium (Debian's `chromium`), and the result must equal Node's byte for byte.
//
// It serves this checkout's dist/, vectors/ and test/browser/ from a static server on 127.0.0.1 (a random
// port), starts Chromium headless with the DevTools protocol over a pipe (--remote-debugging-pipe: file
// descriptors 3 and 4, NUL-terminated JSON; no WebSocket, no new dependency), opens test/browser/page.html,
// waits for the page's result, computes the same with test/browser/decode-all.js in Node, and compares.
//
// Run: node scripts/browser/run.mjs   (after `npx tsup`; CHROMIUM=path overrides the browser)
// Exit status: 0 equal, 1 different or the page failed, 2 no build or no browser.
import { spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as http from "node:http";
import * as os from "node:os";
import * as path from "node:path";
import process from "node:process";
import { fileURLToPath, pathToFileURL } from "node:url";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const CAPTURES = ["qemu10-ext-io.pcap", "libnbd-nbdkit-sr.pcapng"];
const TIMEOUT_MS = 120_000;
const TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".json": "application/json",
  ".pcap": "application/octet-stream",
  ".pcapng": "application/octet-stream",
};

function fail(code, message) {
  process.stderr.write(`browser test: ${message}\n`);
  process.exit(code);
}

function findChromium() {
  const candidates = [process.env.CHROMIUM, "chromium", "chromium-browser"].filter(Boolean);
  for (const c of candidates) {
    const r = spawnSync(c, ["--version"], { encoding: "utf8" });
    if (r.status === 0) return { path: c, version: r.stdout.trim() };
  }
  return undefined;
}

function vectorFiles() {
  return fs.readdirSync(path.join(ROOT, "vectors")).filter((f) => f.endsWith(".json") && f !== "schema.json")
    .sort();
}

/** A static server for dist/, vectors/ and test/browser/ only, on 127.0.0.1. */
function serve() {
  const manifest = JSON.stringify({ vectorFiles: vectorFiles(), captures: CAPTURES });
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://127.0.0.1");
    if (url.pathname === "/manifest.json") {
      res.writeHead(200, { "content-type": TYPES[".json"] });
      res.end(manifest);
      return;
    }
    const rel = path.normalize(decodeURIComponent(url.pathname)).replace(/^[/\\]+/, "");
    const allowed = /^(dist|vectors|test[/\\]browser)[/\\]/.test(rel) && !rel.split(/[/\\]/).includes("..");
    const file = path.join(ROOT, rel);
    if (!allowed || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
      res.writeHead(404);
      res.end();
      return;
    }
    res.writeHead(200, { "content-type": TYPES[path.extname(file)] ?? "application/octet-stream" });
    res.end(fs.readFileSync(file));
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server)));
}

/** A DevTools protocol client over Chromium's pipe (fd 3 to the browser, fd 4 from it). */
class Cdp {
  #out;
  #next = 1;
  #pending = new Map();
  #buffer = "";
  onEvent = () => {};

  constructor(toBrowser, fromBrowser) {
    this.#out = toBrowser;
    fromBrowser.setEncoding("utf8");
    fromBrowser.on("data", (chunk) => {
      this.#buffer += chunk;
      let end;
      while ((end = this.#buffer.indexOf("\0")) >= 0) {
        const msg = JSON.parse(this.#buffer.slice(0, end));
        this.#buffer = this.#buffer.slice(end + 1);
        const p = msg.id === undefined ? undefined : this.#pending.get(msg.id);
        if (p === undefined) this.onEvent(msg);
        else {
          this.#pending.delete(msg.id);
          if (msg.error) p.reject(new Error(`${msg.error.message} (${msg.error.code})`));
          else p.resolve(msg.result);
        }
      }
    });
  }

  send(method, params = {}, sessionId = undefined) {
    const id = this.#next++;
    const msg = { id, method, params, ...(sessionId ? { sessionId } : {}) };
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      this.#out.write(JSON.stringify(msg) + "\0");
    });
  }
}

async function inBrowser(chromium, url) {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "nbd-codec-chromium-"));
  const browser = spawn(chromium, [
    "--headless=new",
    "--remote-debugging-pipe",
    "--no-sandbox", // CI runs as root, where Chromium's sandbox will not start
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--disable-background-networking",
    `--user-data-dir=${profile}`,
    "about:blank",
  ], { stdio: ["ignore", "ignore", "pipe", "pipe", "pipe"] });
  let stderr = "";
  browser.stdio[2].on("data", (d) => stderr += d);
  const exited = new Promise((resolve) => browser.on("exit", (code, signal) => resolve(signal ?? code)));
  const timer = setTimeout(() => {
    browser.kill("SIGKILL");
    fail(1, `no result from the page within ${TIMEOUT_MS / 1000} s; chromium said:\n${stderr.slice(-2000)}`);
  }, TIMEOUT_MS);
  try {
    const cdp = new Cdp(browser.stdio[3], browser.stdio[4]);
    const pageErrors = [];
    cdp.onEvent = (msg) => {
      if (msg.method === "Runtime.exceptionThrown") {
        const d = msg.params.exceptionDetails;
        pageErrors.push(d.exception?.description ?? d.text);
      } else if (msg.method === "Runtime.consoleAPICalled" && msg.params.type === "error") {
        pageErrors.push(msg.params.args.map((a) => a.value ?? a.description).join(" "));
      }
    };
    const { targetId } = await cdp.send("Target.createTarget", { url: "about:blank" });
    const { sessionId } = await cdp.send("Target.attachToTarget", { targetId, flatten: true });
    await cdp.send("Runtime.enable", {}, sessionId);
    await cdp.send("Page.enable", {}, sessionId);
    await cdp.send("Page.navigate", { url }, sessionId);
    const r = await cdp.send("Runtime.evaluate", {
      expression: `new Promise((resolve, reject) => {
        const poll = () => globalThis.nbdResult
          ? globalThis.nbdResult.then(resolve, (e) => reject(String(e && e.stack || e)))
          : setTimeout(poll, 20);
        poll();
      })`,
      awaitPromise: true,
      returnByValue: true,
    }, sessionId);
    if (r.exceptionDetails) {
      const d = r.exceptionDetails;
      throw new Error(`the page failed: ${d.exception?.value ?? d.exception?.description ?? d.text}`);
    }
    if (pageErrors.length > 0) throw new Error(`errors in the page: ${pageErrors.join("; ")}`);
    const version = await cdp.send("Browser.getVersion");
    await cdp.send("Browser.close").catch(() => {});
    return { text: r.result.value, product: version.product };
  } finally {
    clearTimeout(timer);
    if (browser.exitCode === null) {
      const t = setTimeout(() => browser.kill("SIGKILL"), 5000);
      await exited;
      clearTimeout(t);
    }
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

async function inNode() {
  const nbd = await import(pathToFileURL(path.join(ROOT, "dist/mod.js")).href);
  const trace = await import(pathToFileURL(path.join(ROOT, "dist/trace.js")).href);
  const { decodeAll } = await import(pathToFileURL(path.join(ROOT, "test/browser/decode-all.js")).href);
  const files = vectorFiles().map((name) => ({
    name,
    doc: JSON.parse(fs.readFileSync(path.join(ROOT, "vectors", name), "utf8")),
  }));
  const captures = CAPTURES.map((name) => ({
    name,
    bytes: new Uint8Array(fs.readFileSync(path.join(ROOT, "vectors/captures", name))),
  }));
  return decodeAll(nbd, trace, files, captures);
}

function firstDifference(a, b) {
  const la = a.split("\n");
  const lb = b.split("\n");
  for (let i = 0; i < Math.max(la.length, lb.length); i++) {
    if (la[i] !== lb[i]) {
      return `line ${i + 1}:\n  node:    ${la[i]?.slice(0, 400)}\n  browser: ${lb[i]?.slice(0, 400)}`;
    }
  }
  return "no line differs (lengths differ)";
}

if (!fs.existsSync(path.join(ROOT, "dist/mod.js"))) fail(2, "dist/mod.js is missing: run `npx tsup` first");
const chromium = findChromium();
if (chromium === undefined) {
  fail(2, "no chromium found (Debian: apt-get install -y chromium; or set CHROMIUM=/path/to/chrome)");
}
const server = await serve();
const { port } = server.address();
const started = Date.now();
try {
  const browser = await inBrowser(chromium.path, `http://127.0.0.1:${port}/test/browser/page.html`);
  const node = await inNode();
  const summary = JSON.parse(node.trimEnd().split("\n").at(-1));
  if (browser.text !== node) {
    fail(
      1,
      `the browser's output differs from Node's (${browser.text?.length} vs ${node.length} characters); ${
        firstDifference(node, String(browser.text))
      }`,
    );
  }
  console.log(
    `browser test: ${browser.product} and Node ${process.version} agree byte for byte: ${summary.vectors} vectors of ` +
      `${vectorFiles().length} files and ${summary.events} events of ${CAPTURES.join(", ")} ` +
      `(${node.length} characters) in ${Date.now() - started} ms`,
  );
} catch (e) {
  fail(1, e instanceof Error ? e.message : String(e));
} finally {
  server.close();
}
