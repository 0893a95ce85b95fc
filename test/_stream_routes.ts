// Private test helper: how each frame family's vectors are fed to a stream decoder (the decoder set up with
// the context the vector needs), and the frame decoder that decodes the same bytes directly.
import {
  ClientStreamDecoder,
  Command,
  decodeClientFlags,
  type Decoded,
  decodeExportNameReply,
  decodeGreeting,
  decodeOptionReply,
  decodeOptionRequest,
  decodeReplyChunk,
  decodeRequest,
  decodeSimpleReply,
  Option,
  ServerStreamDecoder,
  type StreamEvent,
  type StreamOptions,
} from "../mod.ts";
import type { Vector } from "./_harness.ts";

export type Feeder = { push(chunk: Uint8Array): StreamEvent[]; end(): StreamEvent[] };

export interface Route {
  /** A stream decoder set up for the vector, with `options` (limits, strictness, payload views). */
  make(v: Vector, options?: StreamOptions): Feeder;
  decode(bytes: Uint8Array, ctx: Record<string, unknown>): Decoded<unknown>;
}

const none = { kind: "none" } as const;
export const routes: Record<string, Route> = {
  "greeting": {
    make: (_v, o) => new ServerStreamDecoder(o),
    decode: (b) => decodeGreeting(b, { strict: false }),
  },
  "client-flags": {
    make: (_v, o) => new ClientStreamDecoder(o),
    decode: (b) => decodeClientFlags(b, { strict: false }),
  },
  "export-name-reply": {
    make: (v, o) => {
      const d = new ServerStreamDecoder({
        ...o,
        state: { phase: "options", style: "newstyle", handshakeFlags: 3 },
      });
      d.noteClientFlags(v.context.noZeroes ? 3 : 1);
      d.noteOption({
        type: "option-request",
        option: Option.EXPORT_NAME,
        data: { kind: "export-name", name: "" },
      });
      return d;
    },
    decode: (b, ctx) => decodeExportNameReply(b, { noZeroes: ctx.noZeroes === true, strict: false }),
  },
  "option-request": {
    make: (_v, o) => new ClientStreamDecoder({ ...o, state: { phase: "options", style: "newstyle" } }),
    decode: (b) => decodeOptionRequest(b, { strict: false }),
  },
  "option-reply": {
    make: (v, o) => {
      const d = new ServerStreamDecoder({ ...o, state: { phase: "options", style: "newstyle" } });
      const option = parseInt(v.hex.slice(16, 24), 16);
      d.noteOption({ type: "option-request", option, data: none });
      return d;
    },
    decode: (b) => decodeOptionReply(b, { strict: false }),
  },
  "request": {
    make: (_v, o) => new ClientStreamDecoder({ ...o, state: { phase: "transmission" } }),
    decode: (b) => decodeRequest(b, { strict: false }),
  },
  "simple-reply": {
    make: (v, o) => {
      const d = new ServerStreamDecoder({ ...o, state: { phase: "transmission" } });
      const cookie = BigInt("0x" + v.hex.slice(16, 32));
      const isRead = typeof v.context.readLength === "number";
      const readLength = isRead ? v.context.readLength as number : 0;
      d.noteRequest({
        type: "request",
        extended: false,
        flags: 0,
        command: isRead ? Command.READ : Command.FLUSH,
        cookie,
        offset: 0n,
        length: BigInt(readLength),
      });
      return d;
    },
    decode: (b, ctx) =>
      decodeSimpleReply(b, {
        strict: false,
        ...(typeof ctx.readLength === "number" && parseInt("0x" + toHexAt(b, 4, 4)) === 0
          ? { readLength: ctx.readLength }
          : {}),
      }),
  },
  "reply-chunk": {
    make: (_v, o) => new ServerStreamDecoder({ ...o, state: { phase: "transmission" } }),
    decode: (b) => decodeReplyChunk(b, { strict: false }),
  },
};

export function toHexAt(b: Uint8Array, at: number, n: number): string {
  return Array.from(b.subarray(at, at + n), (x) => x.toString(16).padStart(2, "0")).join("");
}
