// The work the browser test does, in the page and in Node alike, with the same ESM build: decode every
// vector of every vector file (strictly and leniently, through the library's decodeVector and
// checkVectorFile), and every connection of the given captures (pcap and pcapng: the capture reader, TCP
// reassembly, the conversation decoder and both formatters). Returns one text; the two runtimes' texts
// must be equal byte for byte. No imports: the caller passes the two modules, so the page and Node each
// load the build their own way.

/**
 * @param {Record<string, any>} nbd the module `dist/mod.js`
 * @param {Record<string, any>} trace the module `dist/trace.js`
 * @param {{ name: string, doc: any }[]} vectorFiles parsed vector files
 * @param {{ name: string, bytes: Uint8Array }[]} captures capture files
 * @returns {string} one JSON line per vector and per event, then a summary line
 */
export function decodeAll(nbd, trace, vectorFiles, captures) {
  const lines = [];
  let vectors = 0;
  let events = 0;
  for (const { name, doc } of vectorFiles) {
    for (const v of doc.vectors) {
      const strict = nbd.decodeVector(v, { strict: true });
      const lenient = nbd.decodeVector(v, { strict: false });
      lines.push(JSON.stringify({ file: name, id: v.id, strict, lenient }));
      vectors++;
    }
    lines.push(JSON.stringify({ file: name, check: nbd.checkVectorFile(doc) }));
  }
  for (const { name, bytes } of captures) {
    const r = trace.reassembleCapture(bytes);
    lines.push(
      JSON.stringify({ capture: name, connections: r.streams.length, findings: nbd.toJson(r.findings) }),
    );
    r.streams.forEach((s, connection) => {
      const decoded = nbd.decodeConversation(s.c2s, s.s2c, { connection });
      decoded.forEach((e, i) => {
        lines.push(nbd.formatEventJsonLine(e));
        lines.push(JSON.stringify(nbd.formatEventText(e, i + 1)));
        lines.push(JSON.stringify(nbd.toJson(e)));
        events++;
      });
    });
  }
  lines.push(JSON.stringify({ vectors, events }));
  return lines.join("\n") + "\n";
}
