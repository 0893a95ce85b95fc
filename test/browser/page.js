// The browser side of the browser test: the package's ESM build, imported as a page would import it.
import * as nbd from "/dist/mod.js";
import * as trace from "/dist/trace.js";
import { decodeAll } from "./decode-all.js";

async function run() {
  const manifest = await (await fetch("/manifest.json")).json();
  const vectorFiles = [];
  for (const name of manifest.vectorFiles) {
    vectorFiles.push({ name, doc: await (await fetch(`/vectors/${name}`)).json() });
  }
  const captures = [];
  for (const name of manifest.captures) {
    const bytes = new Uint8Array(await (await fetch(`/vectors/captures/${name}`)).arrayBuffer());
    captures.push({ name, bytes });
  }
  const text = decodeAll(nbd, trace, vectorFiles, captures);
  document.getElementById("out").textContent = `done: ${text.length} characters`;
  return text;
}

// @ts-ignore: the test driver reads this
globalThis.nbdResult = run();
