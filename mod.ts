/**
 * nbd-codec: every frame of the NBD (Network Block Device) protocol, encoded and decoded as pure functions
 * over `Uint8Array`. No I/O: bring your own transport.
 *
 * Import it as `"@nbd/codec"` from JSR (Deno: `jsr:@nbd/codec`), which is what the examples here do, or as
 * `"nbd-codec"` from npm (Node, bundlers, browsers); both names have the same exports, and
 * `"@nbd/codec/trace"` is `"nbd-codec/trace"` on npm.
 *
 * @example
 * ```ts
 * import { decodeGreeting, encodeClientFlags, ClientFlag } from "@nbd/codec";
 * const greeting = Uint8Array.from(
 *   "4e42444d4147494349484156454f50540003".match(/../g)!, (h) => parseInt(h, 16));
 * const r = decodeGreeting(greeting);
 * if (r.done && r.frame.type === "newstyle-greeting") {
 *   const reply = encodeClientFlags({ type: "client-flags", flags: ClientFlag.C_FIXED_NEWSTYLE });
 *   console.log(reply); // Uint8Array(4) [ 0, 0, 0, 1 ]
 * }
 * ```
 *
 * @module
 */
export * from "./codec/errors.ts";
export * from "./codec/rules.ts";
export * from "./codec/types.ts";
export {
  ClientFlag,
  codeOf,
  type CodeSpace,
  Command,
  CommandFlag,
  ErrorValue,
  flagNames,
  HandshakeFlag,
  Info,
  InitFlag,
  Magic,
  nameOf,
  Option,
  OptionReply,
  ReplyFlag,
  ReplyType,
  TransmissionFlag,
} from "./codec/constants.ts";
export * from "./codec/handshake.ts";
export * from "./codec/option.ts";
export * from "./codec/option_reply.ts";
export * from "./codec/request.ts";
export * from "./codec/reply.ts";
export * from "./codec/metadata.ts";
export * from "./codec/events.ts";
export * from "./codec/stream.ts";
export * from "./codec/conversation.ts";
// Named, not `export *`: format.ts also holds a byte writer for the command line that is not public API.
export {
  codeName,
  formatEventJson,
  formatEventJsonLine,
  formatEventText,
  type JsonObject,
  type JsonValue,
  type TextOptions,
} from "./codec/format.ts";
export * from "./codec/json.ts";
export * from "./codec/vectors.ts";
export * from "./codec/conversation_vectors.ts";
// Sessions: the shared base (errors, limits, 64-bit arguments).
export * from "./codec/session.ts";
// Sessions: the client session.
export {
  type BlockStatusOptions,
  type ClientEvent,
  type ClientPhase,
  ClientSession,
  type ClientSessionOptions,
  type ClientSessionState,
  type CommandResult,
  type ExportDetails,
  type OptionResult,
  type ReadOptions,
  type ReplyMode,
  type RequestOptions,
} from "./codec/client_session.ts";
// The server session (sans-I/O: handshake, request validation, reply builders).
export * from "./codec/server_session.ts";
// Conformance (`nbd-codec conform`): run the server cases over your own transport, format the results.
export {
  type ConformCase,
  type ConformConnection,
  conformExitCode,
  type ConformLevel,
  type ConformOutcome,
  type ConformResult,
  ConformSetupError,
  ConformTimeoutError,
  formatConformJson,
  formatConformJunit,
  formatConformTable,
} from "./codec/conform.ts";
export {
  runServerCases,
  type RunServerOptions,
  SERVER_CASE_CATALOGUE,
  type ServerTarget,
  type WriteRange,
} from "./codec/conform_server.ts";
// `nbd-codec conform client` as a library: serve a connection sans I/O, judge what the client did.
export {
  CLIENT_CASE_CATALOGUE,
  CLIENT_PROFILE_CATALOGUE,
  type ClientConformConnection,
  type ClientConnectionLog,
  type ClientObservation,
  type ClientProfileInfo,
  createClientConnection,
  evaluateClient,
} from "./codec/conform_client.ts";
export type { ClientFinding } from "./codec/_conform_peer.ts";
