// Private test helper: stream and conversation events as comparable JSON.
import type { ConversationEvent, StreamEvent } from "../mod.ts";
import { toHex } from "./_harness.ts";

/**
 * Events as comparable JSON: bigints as strings, bytes as hex, and a payload given as views
 * (`payloadViews`) folded back into the frame's data, so that every field, finding, offset and length is
 * compared whatever the split.
 */
export function normal(events: readonly (StreamEvent | ConversationEvent)[]): unknown[] {
  return events.map((e) => {
    const o = JSON.parse(JSON.stringify(e, (k, v) => {
      if (typeof v === "bigint") return v.toString();
      if (v instanceof Uint8Array) return toHex(v);
      if (k === "payload" && Array.isArray(v)) return v.map((x: Uint8Array) => toHex(x)).join("");
      if (v !== null && typeof v === "object" && typeof v.lengthAt === "function") {
        return Array.from({ length: v.count }, (_, i) => `${v.lengthAt(i)}:${v.statusAt(i)}`).join();
      }
      return v;
    }));
    // A reply's request is the request frame as decoded: with payload views its data is given by the
    // request's own event, not here.
    if (o.request !== undefined) delete o.request.data;
    if (typeof o.payload === "string") {
      const f = o.frame as Record<string, unknown>;
      const p = f.payload as Record<string, unknown> | undefined;
      if (p?.kind === "offset-data") p.data = o.payload;
      else f.data = o.payload;
      delete o.payload;
    }
    return o;
  });
}
