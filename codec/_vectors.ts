// Private helpers of the vector files (codec/vectors.ts, codec/conversation_vectors.ts): id and hex
// patterns, JSON comparison, and the READ request the broken vectors start from.
import { Command } from "./constants.ts";

/** A vector id: lowercase kebab-case. */
export const ID: RegExp = /^[a-z0-9][a-z0-9-]*$/;

/** Lowercase hex byte pairs. */
export const HEX: RegExp = /^([0-9a-f]{2})*$/;

/** A plain object (not an array, not null). */
export function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

/** JSON with object keys sorted, to compare two JSON values whatever their key order. */
export function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(",")}]`;
  if (isObject(v)) {
    return `{${
      Object.keys(v).sort().filter((k) => v[k] !== undefined).map((k) =>
        `${JSON.stringify(k)}:${canonical(v[k])}`
      )
        .join(",")
    }}`;
  }
  return JSON.stringify(v) ?? "null";
}

/** A compact READ of 512 bytes at 4096, cookie 1: the request most broken vectors start from. */
export const READ_AT_4K: {
  readonly type: "request";
  readonly extended: false;
  readonly flags: 0;
  readonly command: 0;
  readonly cookie: 1n;
  readonly offset: 4096n;
  readonly length: 512n;
} = {
  type: "request",
  extended: false,
  flags: 0,
  command: Command.READ,
  cookie: 1n,
  offset: 4096n,
  length: 512n,
} as const;
