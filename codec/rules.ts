/**
 * The rule catalogue: every rule a decoder or a session of this package can report about a peer's bytes,
 * written once as data. (A session's `NbdLocalError` ids, the local program's mistakes, are apart: see
 * `LOCAL_ERROR_RULES` in `session.ts`.)
 *
 * Each rule id maps to the spec clauses it comes from (section and a short quote of the spec's own words), the
 * level of the requirement, the {@link NbdDecodeErrorCode} it is reported with, and what strict and lenient
 * decoding do when it is broken. The frame decoders look their rules up here (see `Reporter` in `_report.ts`),
 * `docs/rules.md` is generated from it (`scripts/rules-table.ts`), and the tests check that every rule id named
 * anywhere in `codec/` is in it and that every rule has a vector that breaks it.
 *
 * The spec text quoted is `doc/proto.md` of NetworkBlockDevice/nbd: branch `extension-ext-header` (a superset
 * of master; `ext` marks clauses found only there). Clauses about the capture formats, TCP/IP and our own limits
 * are described in our words (levels `FORMAT`, `TRACE`, `LIMIT`), not quoted.
 *
 * Not in the catalogue, on purpose: bits and values the spec tells the receiver to ignore (see
 * {@link IGNORED_BY_RECEIVER}). Those are kept in the decoded frame and shown by the formatters, never reported.
 *
 * @module
 */
import type { NbdDecodeErrorCode } from "./errors.ts";

/**
 * How strong a rule is: `MUST` and `SHOULD` are the NBD spec's words; `PROPOSAL` is a layout from an extension
 * proposal that was never merged (decoded because real peers once sent it); `FORMAT` is the layout of the
 * capture formats and of TCP/IP; `TRACE` is what a capture shows about itself (bytes missing, a stream cut
 * short); `LIMIT` is one of this package's decoder limits (an option with a documented default).
 *
 * @example
 * ```ts
 * import type { RuleLevel } from "@nbd/codec";
 * const level: RuleLevel = "MUST";
 * console.log(level);
 * ```
 */
export type RuleLevel = "MUST" | "SHOULD" | "PROPOSAL" | "FORMAT" | "TRACE" | "LIMIT";

/**
 * What a decoder does when a rule is broken: `throw` an `NbdDecodeError` (nothing can be decoded past it), or
 * return a `finding` next to the decoded frame (or event) and go on. A lenient stream or conversation decoder
 * never throws for peer bytes: what a frame decoder would throw ends that direction with an `undecodable`
 * notice that carries the finding.
 *
 * @example
 * ```ts
 * import type { RuleAction } from "@nbd/codec";
 * const action: RuleAction = "finding";
 * console.log(action);
 * ```
 */
export type RuleAction = "throw" | "finding";

/**
 * One clause a rule rests on: where it is and what it says.
 *
 * @example
 * ```ts
 * import type { RuleClause } from "@nbd/codec";
 * const c: RuleClause = { section: "Client flags", quote: "Clients MUST NOT set any other flags" };
 * console.log(c.section);
 * ```
 */
export interface RuleClause {
  /** The heading of the spec section (for `FORMAT`, `TRACE` and `LIMIT` rules: the format or option). */
  readonly section: string;
  /**
   * For `MUST`, `SHOULD`: the spec's own words, shortened with "…" but never reworded. Otherwise a description
   * in our words.
   */
  readonly quote: string;
  /** True when the clause is only in branch `extension-ext-header` (extended headers), not in master. */
  readonly ext?: boolean;
}

/**
 * A rule of the catalogue.
 *
 * @example
 * ```ts
 * import { RULES, type Rule } from "@nbd/codec";
 * const rule: Rule = RULES["client-flags-reserved"];
 * console.log(rule.level, rule.code, rule.lenient); // "MUST" "reserved-bits" "finding"
 * ```
 */
export interface Rule {
  /** The error code a violation is reported with. */
  readonly code: NbdDecodeErrorCode;
  /** How strong the requirement is. */
  readonly level: RuleLevel;
  /**
   * Which decoders check it: one frame, a stream or conversation (needs earlier frames), a client or server
   * session (needs the requests, options and negotiation it holds), or a capture.
   */
  readonly scope: "frame" | "stream" | "session" | "capture";
  /**
   * The clauses it rests on. Two or more when the rule is the consequence of clauses that together forbid a
   * frame (a flag that needs a negotiation the handshake style cannot have, say).
   */
  readonly clauses: readonly RuleClause[];
  /** What strict decoding (the default) does. */
  readonly strict: RuleAction;
  /** What lenient decoding (`strict: false`) does. */
  readonly lenient: RuleAction;
}

/** Sections of doc/proto.md, by their headings. */
const S = {
  conventions: "Conventions",
  oldstyle: "Oldstyle negotiation",
  newstyle: "Newstyle negotiation",
  fixedNewstyle: "Fixed newstyle negotiation",
  requestMessage: "Request message",
  simpleReply: "Simple reply message",
  structuredReply: "Structured reply chunk message",
  extendedReply: "Extended reply chunk message",
  sizeConstraints: "Size constraints",
  metadataQuerying: "Metadata querying",
  handshakeFlags: "Handshake flags",
  clientFlags: "Client flags",
  transmissionFlags: "Transmission flags",
  optionTypes: "Option types",
  optionReplyTypes: "Option reply types",
  commandFlags: "Command flags",
  replyTypes: "Structured reply types",
  requestTypes: "Request types",
} as const;

/**
 * The catalogue: rule id → {@link Rule}. Frozen data; `docs/rules.md` is generated from it.
 *
 * @example
 * ```ts
 * import { RULES } from "@nbd/codec";
 * const r = RULES["chunk-none-done"];
 * console.log(r.clauses[0]?.quote); // "This chunk type MUST always be used with the `NBD_REPLY_FLAG_DONE` bit set"
 * ```
 */
export const RULES = {
  // ---- every frame family -------------------------------------------------------------------------------
  "magic": {
    code: "bad-magic",
    level: "MUST",
    scope: "frame",
    clauses: [{
      section: "Request message",
      quote: "C: 32 bits, 0x25609513, magic (`NBD_REQUEST_MAGIC`)",
    }],
    strict: "throw",
    lenient: "throw",
  },
  "string-utf8": {
    code: "bad-string",
    level: "MUST",
    scope: "frame",
    clauses: [{ section: "Conventions", quote: "that string is a sequence of UTF-8 code points" }],
    strict: "throw",
    lenient: "finding",
  },
  "string-no-nul": {
    code: "bad-string",
    level: "MUST",
    scope: "frame",
    clauses: [{ section: "Conventions", quote: "MUST NOT contain `NUL` characters" }],
    strict: "throw",
    lenient: "finding",
  },
  "string-max-length": {
    code: "string-too-long",
    level: "MUST",
    scope: "frame",
    clauses: [{ section: "Conventions", quote: "MUST be no longer than 4096 bytes" }],
    strict: "throw",
    lenient: "finding",
  },
  "max-payload-length": {
    code: "limit-exceeded",
    level: "LIMIT",
    scope: "frame",
    clauses: [{
      section: "option maxPayloadLength",
      quote: "a length field above the decoder's limit (default 64 MiB), refused before anything is buffered",
    }],
    strict: "throw",
    lenient: "throw",
  },

  // ---- handshake ----------------------------------------------------------------------------------------
  "oldstyle-handshake-flags": {
    code: "reserved-bits",
    level: "MUST",
    scope: "frame",
    clauses: [{
      section: "Handshake flags",
      quote: "The server MUST NOT set any of these flags during oldstyle negotiation.",
    }],
    strict: "throw",
    lenient: "finding",
  },
  "oldstyle-zeroes": {
    code: "bad-value",
    level: "MUST",
    scope: "frame",
    clauses: [{ section: "Oldstyle negotiation", quote: "S: 124 bytes, zeroes (reserved)." }],
    strict: "throw",
    lenient: "finding",
  },
  "oldstyle-transmission-df": {
    code: "bad-value",
    level: "MUST",
    scope: "frame",
    clauses: [
      {
        section: "Transmission flags",
        quote:
          "MUST leave this flag clear if neither structured replies nor extended headers have been negotiated",
        ext: true,
      },
      {
        section: "Oldstyle negotiation",
        quote: "As can be seen, this isn't exactly a negotiation",
      },
    ],
    strict: "throw",
    lenient: "finding",
  },
  "oldstyle-transmission-block-status-payload": {
    code: "bad-value",
    level: "MUST",
    scope: "frame",
    clauses: [
      {
        section: "Transmission flags",
        quote:
          "Servers MUST NOT advertise this bit unless the client successfully negotiates extended headers via `NBD_OPT_EXTENDED_HEADERS`",
        ext: true,
      },
      { section: "Oldstyle negotiation", quote: "As can be seen, this isn't exactly a negotiation" },
    ],
    strict: "throw",
    lenient: "finding",
  },
  "client-flags-reserved": {
    code: "reserved-bits",
    level: "MUST",
    scope: "frame",
    clauses: [{ section: "Client flags", quote: "Clients MUST NOT set any other flags" }],
    strict: "throw",
    lenient: "finding",
  },
  "client-flags-unadvertised": {
    code: "bad-value",
    level: "MUST",
    scope: "frame",
    clauses: [
      { section: "Client flags", quote: "MUST NOT be set if the server did not set `NBD_FLAG_NO_ZEROES`" },
      {
        section: "Client flags",
        quote:
          "the server MUST drop the TCP connection if the client sets an unknown flag, or a flag that does not match something advertised by the server",
      },
    ],
    strict: "throw",
    lenient: "finding",
  },
  "export-name-reply-zeroes": {
    code: "bad-value",
    level: "MUST",
    scope: "frame",
    clauses: [{ section: "Newstyle negotiation", quote: "S: 124 bytes, zeroes (reserved)" }],
    strict: "throw",
    lenient: "finding",
  },
  "export-name-reply-block-status-payload": {
    code: "bad-value",
    level: "MUST",
    scope: "frame",
    clauses: [
      {
        section: "Transmission flags",
        quote:
          "Servers MUST NOT advertise this bit unless the client successfully negotiates extended headers via `NBD_OPT_EXTENDED_HEADERS`",
        ext: true,
      },
      {
        section: "Option types",
        quote:
          "a client that has used `NBD_OPT_EXTENDED_HEADERS` to negotiate extended headers MUST NOT use this option",
        ext: true,
      },
    ],
    strict: "throw",
    lenient: "finding",
  },
  "transmission-has-flags": {
    code: "bad-value",
    level: "MUST",
    scope: "frame",
    clauses: [{ section: "Transmission flags", quote: "bit 0, `NBD_FLAG_HAS_FLAGS`: MUST always be 1." }],
    strict: "throw",
    lenient: "finding",
  },
  "transmission-fast-zero": {
    code: "bad-value",
    level: "MUST",
    scope: "frame",
    clauses: [{
      section: "Transmission flags",
      quote: "MUST set this transmission flag to 0 if `NBD_FLAG_SEND_WRITE_ZEROES` is not set",
    }],
    strict: "throw",
    lenient: "finding",
  },

  "transmission-df-unnegotiated": {
    code: "bad-value",
    level: "MUST",
    scope: "frame",
    clauses: [{
      section: "Transmission flags",
      quote:
        "MUST leave this flag clear if neither structured replies nor extended headers have been negotiated",
      ext: true,
    }],
    strict: "throw",
    lenient: "finding",
  },
  "transmission-block-status-payload-unnegotiated": {
    code: "bad-value",
    level: "MUST",
    scope: "frame",
    clauses: [{
      section: "Transmission flags",
      quote:
        "Servers MUST NOT advertise this bit unless the client successfully negotiates extended headers via `NBD_OPT_EXTENDED_HEADERS`",
      ext: true,
    }],
    strict: "throw",
    lenient: "finding",
  },

  // ---- option requests ----------------------------------------------------------------------------------
  "option-no-data": {
    code: "bad-length",
    level: "MUST",
    scope: "frame",
    clauses: [{
      section: "Option types",
      quote: "The client MUST NOT send any additional data with the option",
    }],
    strict: "throw",
    lenient: "finding",
  },
  "option-info-length": {
    code: "bad-length",
    level: "MUST",
    scope: "frame",
    clauses: [{
      section: "Option types",
      quote:
        "16 bits, number of information requests … 16 bits x n - list of `NBD_INFO` information requests",
    }],
    strict: "throw",
    lenient: "finding",
  },
  "option-info-name-length": {
    code: "bad-length",
    level: "MUST",
    scope: "frame",
    clauses: [{
      section: "Option types",
      quote: "32 bits, length of name (unsigned); MUST be no larger than the option data length - 6",
    }],
    strict: "throw",
    lenient: "finding",
  },
  "option-info-duplicate": {
    code: "duplicate",
    level: "MUST",
    scope: "frame",
    clauses: [{
      section: "Option types",
      quote: "The client MUST NOT include any information request in the list more than once.",
    }],
    strict: "throw",
    lenient: "finding",
  },
  "option-meta-context-length": {
    code: "bad-length",
    level: "MUST",
    scope: "frame",
    clauses: [{
      section: "Option types",
      quote: "32 bits, length of export name. … 32 bits, number of queries … Zero or more queries",
    }],
    strict: "throw",
    lenient: "finding",
  },
  "option-meta-context-name-length": {
    code: "bad-length",
    level: "MUST",
    scope: "frame",
    clauses: [{ section: "Option types", quote: "32 bits, length of export name." }],
    strict: "throw",
    lenient: "finding",
  },
  "option-meta-context-query-length": {
    code: "bad-length",
    level: "MUST",
    scope: "frame",
    clauses: [{
      section: "Option types",
      quote:
        "If the option request is syntactically invalid (such as a query length that would require reading beyond the original length given in the option header), the server MUST fail the request with `NBD_REP_ERR_INVALID`.",
    }],
    strict: "throw",
    lenient: "finding",
  },
  "meta-context-query-namespace": {
    code: "bad-value",
    level: "MUST",
    scope: "frame",
    clauses: [{ section: "Option types", quote: "it MUST start with a namespace and a colon" }],
    strict: "throw",
    lenient: "finding",
  },

  "export-name-after-extended-headers": {
    code: "unexpected-frame",
    level: "MUST",
    scope: "frame",
    clauses: [{
      section: "Option types",
      quote: "Once extended headers are successfully requested, a client MUST NOT use `NBD_OPT_EXPORT_NAME`.",
      ext: true,
    }],
    strict: "throw",
    lenient: "finding",
  },
  "set-meta-context-unnegotiated": {
    code: "unexpected-frame",
    level: "MUST",
    scope: "frame",
    clauses: [{
      section: "Option types",
      quote:
        "This option MUST NOT be requested unless structured replies or extended headers have been negotiated first.",
      ext: true,
    }],
    strict: "throw",
    lenient: "finding",
  },
  "list-meta-context-unnegotiated": {
    code: "unexpected-frame",
    level: "SHOULD",
    scope: "frame",
    clauses: [{
      section: "Option types",
      quote:
        "This option SHOULD NOT be requested unless structured replies or extended headers have been negotiated first.",
      ext: true,
    }],
    strict: "throw",
    lenient: "finding",
  },

  // ---- option replies -----------------------------------------------------------------------------------
  "option-reply-echo": {
    code: "unexpected-frame",
    level: "MUST",
    scope: "frame",
    clauses: [{
      section: "Fixed newstyle negotiation",
      quote: "S: 32 bits, the option as sent by the client to which this is a reply",
    }],
    strict: "throw",
    lenient: "finding",
  },
  "option-reply-export-name": {
    code: "unexpected-frame",
    level: "MUST",
    scope: "frame",
    clauses: [
      {
        section: "Fixed newstyle negotiation",
        quote: "The server will reply to any option apart from `NBD_OPT_EXPORT_NAME`",
      },
      {
        section: "Fixed newstyle negotiation",
        quote: "S: 32 bits, the option as sent by the client to which this is a reply",
      },
    ],
    strict: "throw",
    lenient: "finding",
  },
  "option-reply-type-for-option": {
    code: "unexpected-frame",
    level: "MUST",
    scope: "frame",
    clauses: [
      {
        section: "Option types",
        quote:
          "Return zero or more `NBD_REP_SERVER` replies, one for each export, followed by `NBD_REP_ACK` or an error",
      },
      {
        section: "Option reply types",
        quote: "The response to `NBD_OPT_INFO` and `NBD_OPT_GO` includes zero or more of these messages",
      },
      {
        section: "Option types",
        quote: "The server MUST reply with a list of zero or more `NBD_REP_META_CONTEXT` replies",
      },
      {
        section: "Fixed newstyle negotiation",
        quote: "S: 32 bits, the option as sent by the client to which this is a reply",
      },
    ],
    strict: "throw",
    lenient: "finding",
  },
  "option-reply-ack-length": {
    code: "bad-length",
    level: "MUST",
    scope: "frame",
    clauses: [{
      section: "Option reply types",
      quote: "(in the case of `NBD_OPT_LIST`) has finished. No data.",
    }],
    strict: "throw",
    lenient: "finding",
  },
  "option-reply-server-length": {
    code: "bad-length",
    level: "MUST",
    scope: "frame",
    clauses: [{
      section: "Option reply types",
      quote: "32 bits, length of name (unsigned); MUST be no larger than the reply packet header length - 4",
    }],
    strict: "throw",
    lenient: "finding",
  },
  "option-reply-server-name-length": {
    code: "bad-length",
    level: "MUST",
    scope: "frame",
    clauses: [{
      section: "Option reply types",
      quote: "32 bits, length of name (unsigned); MUST be no larger than the reply packet header length - 4",
    }],
    strict: "throw",
    lenient: "finding",
  },
  "option-reply-info-length": {
    code: "bad-length",
    level: "MUST",
    scope: "frame",
    clauses: [{ section: "Option types", quote: "16 bits, information type (e.g. `NBD_INFO_EXPORT`)" }],
    strict: "throw",
    lenient: "finding",
  },
  "option-reply-meta-context-length": {
    code: "bad-length",
    level: "MUST",
    scope: "frame",
    clauses: [{ section: "Option reply types", quote: "32 bits, NBD metadata context ID." }],
    strict: "throw",
    lenient: "finding",
  },
  "meta-context-name-namespace": {
    code: "bad-value",
    level: "MUST",
    scope: "frame",
    clauses: [{
      section: "Metadata querying",
      quote: "The name MUST consist of a namespace, followed by a colon, followed by a leaf-name.",
    }],
    strict: "throw",
    lenient: "finding",
  },
  "info-export-length": {
    code: "bad-length",
    level: "MUST",
    scope: "frame",
    clauses: [{ section: "Option types", quote: "*length* MUST be 12" }],
    strict: "throw",
    lenient: "finding",
  },
  "info-block-size-length": {
    code: "bad-length",
    level: "MUST",
    scope: "frame",
    clauses: [{ section: "Option types", quote: "The *length* MUST be 14" }],
    strict: "throw",
    lenient: "finding",
  },
  "info-block-size-minimum": {
    code: "bad-value",
    level: "MUST",
    scope: "frame",
    clauses: [{
      section: "Size constraints",
      quote: "this value MUST be a power of 2, MUST NOT be larger than 2^16 (65,536)",
    }],
    strict: "throw",
    lenient: "finding",
  },
  "info-block-size-preferred": {
    code: "bad-value",
    level: "MUST",
    scope: "frame",
    clauses: [{
      section: "Size constraints",
      quote:
        "this MUST be a power of 2 at least as large as the maximum of the minimum block size and 2^9 (512)",
    }],
    strict: "throw",
    lenient: "finding",
  },
  "info-block-size-maximum": {
    code: "bad-value",
    level: "MUST",
    scope: "frame",
    clauses: [{
      section: "Size constraints",
      quote: "MUST be at least as large as the preferred block size",
    }],
    strict: "throw",
    lenient: "finding",
  },
  "info-init-flags-length": {
    code: "bad-length",
    level: "PROPOSAL",
    scope: "frame",
    clauses: [{
      section: "NBD_INFO_INIT_STATE proposal (nbd list, 2020-02-10; never merged)",
      quote: "the item is the 2-byte info type and 16 bits of flags: length 4",
    }],
    strict: "throw",
    lenient: "finding",
  },

  // ---- requests -----------------------------------------------------------------------------------------
  "request-header-style": {
    code: "unexpected-frame",
    level: "MUST",
    scope: "frame",
    clauses: [{
      section: "Option types",
      quote: "MUST use the 32-byte extended request header",
      ext: true,
    }],
    strict: "throw",
    lenient: "finding",
  },
  "command-flags-reserved": {
    code: "reserved-bits",
    level: "MUST",
    scope: "frame",
    clauses: [{
      section: "Request message",
      quote: "Clients MUST NOT set a command flag bit that is not documented for the particular command",
    }],
    strict: "throw",
    lenient: "finding",
  },
  "command-flags": {
    code: "reserved-bits",
    level: "MUST",
    scope: "frame",
    clauses: [{
      section: "Request message",
      quote: "Clients MUST NOT set a command flag bit that is not documented for the particular command",
    }],
    strict: "throw",
    lenient: "finding",
  },
  "command-unadvertised": {
    code: "unexpected-frame",
    level: "MUST",
    scope: "frame",
    clauses: [
      {
        section: "Transmission flags",
        quote:
          "The client MUST NOT use a feature documented as 'exposed' by a flag unless that flag was set.",
      },
      {
        section: "Request types",
        quote:
          "A client MUST NOT send a flush request unless `NBD_FLAG_SEND_FLUSH` was set in the transmission flags field.",
      },
      {
        section: "Request types",
        quote:
          "A client MUST NOT send a trim request unless `NBD_FLAG_SEND_TRIM` was set in the transmission flags field.",
      },
      {
        section: "Request types",
        quote:
          "A client MUST NOT send a write zeroes request unless `NBD_FLAG_SEND_WRITE_ZEROES` was set in the transmission flags field.",
      },
    ],
    strict: "throw",
    lenient: "finding",
  },
  "command-flag-unadvertised": {
    code: "reserved-bits",
    level: "MUST",
    scope: "frame",
    clauses: [
      {
        section: "Command flags",
        quote: "This flag is valid for all commands, provided `NBD_FLAG_SEND_FUA` has been negotiated",
      },
      {
        section: "Transmission flags",
        quote:
          "Clients MUST NOT set the `NBD_CMD_FLAG_DF` request flag unless this transmission flag is set.",
      },
      {
        section: "Transmission flags",
        quote:
          "Clients MUST NOT set the `NBD_CMD_FLAG_FAST_ZERO` request flag unless this transmission flag is set.",
      },
    ],
    strict: "throw",
    lenient: "finding",
  },
  "block-status-payload-unadvertised": {
    code: "reserved-bits",
    level: "SHOULD",
    scope: "frame",
    clauses: [{
      section: "Transmission flags",
      quote:
        "clients SHOULD NOT set the `NBD_CMD_FLAG_PAYLOAD_LEN` flag for `NBD_CMD_BLOCK_STATUS` unless this transmission flag is set.",
      ext: true,
    }],
    strict: "throw",
    lenient: "finding",
  },
  "compact-payload-len": {
    code: "reserved-bits",
    level: "MUST",
    scope: "frame",
    clauses: [{
      section: "Command flags",
      quote:
        "`NBD_CMD_FLAG_PAYLOAD_LEN`; only valid if extended headers were negotiated via `NBD_OPT_EXTENDED_HEADERS`",
      ext: true,
    }],
    strict: "throw",
    lenient: "finding",
  },
  "write-payload-len": {
    code: "bad-value",
    level: "MUST",
    scope: "frame",
    clauses: [{
      section: "Request message",
      quote: "The command `NBD_CMD_WRITE` MUST use the flag `NBD_CMD_FLAG_PAYLOAD_LEN` in this mode",
      ext: true,
    }],
    strict: "throw",
    lenient: "finding",
  },
  "payload-len-zero": {
    code: "bad-length",
    level: "MUST",
    scope: "frame",
    clauses: [{
      section: "Command flags",
      quote: "If set, the *length* field of the header describes a (nonzero) payload length",
      ext: true,
    }],
    strict: "throw",
    lenient: "finding",
  },
  "disc-offset-length": {
    code: "bad-value",
    level: "MUST",
    scope: "frame",
    clauses: [{
      section: "Request types",
      quote: "The values of the length and offset fields in a disconnect request MUST be zero.",
    }],
    strict: "throw",
    lenient: "finding",
  },
  "flush-offset-length": {
    code: "bad-value",
    level: "MUST",
    scope: "frame",
    clauses: [{
      section: "Request types",
      quote: "For a flush request, *length* and *offset* are reserved, and MUST be set to all-zero.",
    }],
    strict: "throw",
    lenient: "finding",
  },
  "block-status-payload-length": {
    code: "bad-length",
    level: "MUST",
    scope: "frame",
    clauses: [{ section: "Request types", quote: "The payload form MUST occupy 8 + n*4 bytes", ext: true }],
    strict: "throw",
    lenient: "finding",
  },
  "block-status-payload-duplicate": {
    code: "duplicate",
    level: "MUST",
    scope: "frame",
    clauses: [{
      section: "Request types",
      quote:
        "or detects duplicate or unknown metacontext ids in the client's payload, the server MUST gracefully consume the client's payload before failing with `NBD_EINVAL`",
      ext: true,
    }],
    strict: "throw",
    lenient: "finding",
  },

  // ---- replies ------------------------------------------------------------------------------------------
  "reply-header-style": {
    code: "unexpected-frame",
    level: "MUST",
    scope: "frame",
    clauses: [{
      section: "Extended reply chunk message",
      quote:
        "If extended headers are negotiated, all server replies MUST use an extended reply; the server MUST NOT use simple replies even when there is no payload.",
      ext: true,
    }],
    strict: "throw",
    lenient: "finding",
  },
  "chunk-none-done": {
    code: "bad-value",
    level: "MUST",
    scope: "frame",
    clauses: [{
      section: "Structured reply types",
      quote: "This chunk type MUST always be used with the `NBD_REPLY_FLAG_DONE` bit set",
    }],
    strict: "throw",
    lenient: "finding",
  },
  "chunk-none-length": {
    code: "bad-length",
    level: "MUST",
    scope: "frame",
    clauses: [{
      section: "Structured reply types",
      quote: "*length* MUST be 0 (and the payload field omitted).",
    }],
    strict: "throw",
    lenient: "finding",
  },
  "chunk-offset-data-length": {
    code: "bad-length",
    level: "MUST",
    scope: "frame",
    clauses: [{ section: "Structured reply types", quote: "*length* MUST be at least 9." }],
    strict: "throw",
    lenient: "finding",
  },
  "chunk-offset-hole-length": {
    code: "bad-length",
    level: "MUST",
    scope: "frame",
    clauses: [{ section: "Structured reply types", quote: "*length* MUST be exactly 12." }],
    strict: "throw",
    lenient: "finding",
  },
  "chunk-hole-size-zero": {
    code: "bad-value",
    level: "MUST",
    scope: "frame",
    clauses: [{ section: "Structured reply types", quote: "32 bits: hole size (unsigned, MUST be nonzero)" }],
    strict: "throw",
    lenient: "finding",
  },
  "block-status-header-style": {
    code: "unexpected-frame",
    level: "MUST",
    scope: "frame",
    clauses: [
      {
        section: "Structured reply types",
        quote:
          "a server may only use this type if extended headers were not negotiated via `NBD_OPT_EXTENDED_HEADERS`",
        ext: true,
      },
      {
        section: "Structured reply types",
        quote:
          "This chunk type MUST NOT be used unless extended headers were negotiated with `NBD_OPT_EXTENDED_HEADERS`.",
        ext: true,
      },
    ],
    strict: "throw",
    lenient: "finding",
  },
  "chunk-block-status-length": {
    code: "bad-length",
    level: "MUST",
    scope: "frame",
    clauses: [{
      section: "Structured reply types",
      quote: "*length* MUST be 4 + (a positive integer multiple of 8).",
    }],
    strict: "throw",
    lenient: "finding",
  },
  "chunk-block-status-ext-length": {
    code: "bad-length",
    level: "MUST",
    scope: "frame",
    clauses: [{
      section: "Structured reply types",
      quote: "*length* MUST be 8 + (a positive multiple of 16).",
      ext: true,
    }],
    strict: "throw",
    lenient: "finding",
  },
  "chunk-block-status-ext-count": {
    code: "bad-length",
    level: "MUST",
    scope: "frame",
    clauses: [{
      section: "Structured reply types",
      quote: "The *descriptor count* field MUST correspond to the number of subsequent descriptors",
      ext: true,
    }],
    strict: "throw",
    lenient: "finding",
  },
  "extent-length-zero": {
    code: "bad-value",
    level: "MUST",
    scope: "frame",
    clauses: [{
      section: "Structured reply types",
      quote: "length of the extent to which the status below applies (unsigned, MUST be nonzero)",
    }],
    strict: "throw",
    lenient: "finding",
  },
  "block-status-upper-bits": {
    code: "reserved-bits",
    level: "MUST",
    scope: "frame",
    clauses: [{
      section: "Structured reply types",
      quote:
        'For metadata contexts that only return a 32-bit status (including all contexts in the "base:" namespace), the most-significant 32 bits of *status* MUST be all zeroes.',
      ext: true,
    }],
    strict: "throw",
    lenient: "finding",
  },
  "chunk-type-unknown": {
    code: "unknown-type",
    level: "MUST",
    scope: "frame",
    clauses: [{
      section: "Structured reply types",
      quote:
        "If the client receives an unknown or unexpected type, other than an *error chunk*, it MUST initiate a hard disconnect.",
    }],
    strict: "throw",
    lenient: "finding",
  },
  "chunk-error-length": {
    code: "bad-length",
    level: "MUST",
    scope: "frame",
    clauses: [{ section: "Structured reply types", quote: "*length* MUST be at least 6." }],
    strict: "throw",
    lenient: "finding",
  },
  "chunk-error-offset-length": {
    code: "bad-length",
    level: "MUST",
    scope: "frame",
    clauses: [{ section: "Structured reply types", quote: "*length* MUST be at least 14." }],
    strict: "throw",
    lenient: "finding",
  },
  "chunk-error-message-length": {
    code: "bad-length",
    level: "MUST",
    scope: "frame",
    clauses: [{
      section: "Structured reply types",
      quote: "16 bits: message length (no more than header *length* - 6)",
    }],
    strict: "throw",
    lenient: "finding",
  },
  "chunk-error-zero": {
    code: "bad-value",
    level: "MUST",
    scope: "frame",
    clauses: [{ section: "Structured reply types", quote: "32 bits: error (MUST be nonzero)" }],
    strict: "throw",
    lenient: "finding",
  },

  // ---- streams and conversations (codec/_stream_impl.ts) -------------------------------------------------
  "export-name-option-reply": {
    code: "unexpected-frame",
    level: "MUST",
    scope: "stream",
    clauses: [{
      section: "Fixed newstyle negotiation",
      quote: "The server will reply to any option apart from `NBD_OPT_EXPORT_NAME`",
    }],
    strict: "throw",
    lenient: "finding",
  },
  "option-reply-unsolicited": {
    code: "unexpected-frame",
    level: "MUST",
    scope: "stream",
    clauses: [{
      section: "Fixed newstyle negotiation",
      quote: "S: 32 bits, the option as sent by the client to which this is a reply",
    }],
    strict: "throw",
    lenient: "finding",
  },
  "reply-unknown-cookie": {
    code: "unexpected-frame",
    level: "MUST",
    scope: "stream",
    clauses: [{
      section: "Simple reply message",
      quote: "S: 64 bits, cookie (MUST match the request)",
      ext: true,
    }],
    strict: "throw",
    lenient: "finding",
  },
  "simple-reply-read-structured": {
    code: "unexpected-frame",
    level: "MUST",
    scope: "stream",
    clauses: [{
      section: "Structured reply chunk message",
      quote: "MUST NOT use a simple reply for `NBD_CMD_READ`",
    }],
    strict: "throw",
    lenient: "finding",
  },
  "extended-reply-offset": {
    code: "bad-value",
    level: "MUST",
    scope: "stream",
    clauses: [{
      section: "Extended reply chunk message",
      quote:
        "The extended reply has an additional field *offset* which MUST match the *offset* of the client's request",
      ext: true,
    }],
    strict: "throw",
    lenient: "finding",
  },
  "chunk-without-negotiation": {
    code: "unexpected-frame",
    level: "MUST",
    scope: "stream",
    clauses: [{
      section: "Structured reply chunk message",
      quote:
        "The server MUST NOT send this reply type unless the client has successfully negotiated structured replies via `NBD_OPT_STRUCTURED_REPLY`.",
    }],
    strict: "throw",
    lenient: "finding",
  },
  "block-status-context": {
    code: "bad-value",
    level: "MUST",
    scope: "stream",
    clauses: [{
      section: "Structured reply types",
      quote:
        "A successful block status request MUST have exactly one status chunk per negotiated metadata context ID.",
    }],
    strict: "throw",
    lenient: "finding",
  },
  "frame-length": {
    code: "bad-length",
    level: "FORMAT",
    scope: "stream",
    clauses: [{
      section: "stream framing",
      quote: "a frame's bytes end where its length fields say they end",
    }],
    strict: "throw",
    lenient: "throw",
  },
  "stream-truncated": {
    code: "truncated",
    level: "TRACE",
    scope: "stream",
    clauses: [{ section: "stream end", quote: "the stream ends inside a frame" }],
    strict: "throw",
    lenient: "finding",
  },
  "capture-gap": {
    code: "truncated",
    level: "TRACE",
    scope: "stream",
    clauses: [{ section: "stream gap", quote: "bytes of the stream are missing from the capture" }],
    strict: "throw",
    lenient: "finding",
  },
  "max-buffered-bytes": {
    code: "limit-exceeded",
    level: "LIMIT",
    scope: "stream",
    clauses: [{
      section: "option maxBufferedBytes",
      quote: "a frame would need more buffered bytes than the limit",
    }],
    strict: "throw",
    lenient: "throw",
  },
  "outstanding-limit": {
    code: "limit-exceeded",
    level: "LIMIT",
    scope: "stream",
    clauses: [{
      section: "option maxBufferedBytes (conversation)",
      quote:
        "requests and options waiting for replies (256 bytes each and their payload) exceed the limit: the oldest are dropped",
    }],
    strict: "throw",
    lenient: "finding",
  },

  "buffer-limit-one-sided": {
    code: "limit-exceeded",
    level: "LIMIT",
    scope: "stream",
    clauses: [{
      section: "option maxBufferedBytes (conversation)",
      quote: "one side waits for the other with more than the limit buffered and is decoded alone",
    }],
    strict: "throw",
    lenient: "finding",
  },

  // ---- sessions: the client session on the server's bytes (codec/client_session.ts, codec/_client_reply.ts) --
  "reply-before-transmission": {
    code: "unexpected-frame",
    level: "MUST",
    scope: "session",
    clauses: [
      {
        section: "Simple reply message",
        quote: "S: 64 bits, cookie (MUST match the request)",
        ext: true,
      },
    ],
    strict: "throw",
    lenient: "finding",
  },
  "meta-context-duplicate-id": {
    code: "duplicate",
    level: "MUST",
    scope: "session",
    clauses: [
      {
        section: "Option types",
        quote: "one for each selected metadata context, each with a unique metadata context ID",
      },
    ],
    strict: "throw",
    lenient: "finding",
  },
  "info-export-missing": {
    code: "unexpected-frame",
    level: "MUST",
    scope: "session",
    clauses: [
      {
        section: "Option reply types",
        quote:
          "The server MUST send an `NBD_INFO_EXPORT` information type at some point before sending an `NBD_REP_ACK`",
      },
    ],
    strict: "throw",
    lenient: "finding",
  },
  "chunk-type-command": {
    code: "unexpected-frame",
    level: "MUST",
    scope: "session",
    clauses: [
      {
        section: "Structured reply types",
        quote: "Valid as a reply to `NBD_CMD_READ`.",
      },
      {
        section: "Structured reply types",
        quote:
          "Valid as a reply to `NBD_CMD_READ`, `NBD_CMD_WRITE`, `NBD_CMD_TRIM`, `NBD_CMD_CACHE`, `NBD_CMD_WRITE_ZEROES`, and `NBD_CMD_BLOCK_STATUS`.",
      },
      {
        section: "Structured reply types",
        quote:
          "If the client receives an unknown or unexpected type, other than an *error chunk*, it MUST initiate a hard disconnect.",
      },
    ],
    strict: "throw",
    lenient: "finding",
  },
  "read-chunk-range": {
    code: "bad-value",
    level: "MUST",
    scope: "session",
    clauses: [
      {
        section: "Structured reply types",
        quote:
          "The data MUST lie within the bounds of the original offset and length of the client's request",
      },
    ],
    strict: "throw",
    lenient: "finding",
  },
  "read-chunk-overlap": {
    code: "bad-value",
    level: "MUST",
    scope: "session",
    clauses: [
      {
        section: "Request types",
        quote: "The server MUST NOT send content chunks that overlap with any earlier content or error chunk",
      },
    ],
    strict: "throw",
    lenient: "finding",
  },
  "read-df-fragmented": {
    code: "unexpected-frame",
    level: "MUST",
    scope: "session",
    clauses: [
      {
        section: "Request types",
        quote: "If this flag is set, the server MUST send at most one content chunk",
      },
    ],
    strict: "throw",
    lenient: "finding",
  },
  "read-incomplete": {
    code: "bad-length",
    level: "MUST",
    scope: "session",
    clauses: [
      {
        section: "Request types",
        quote:
          "When no error is detected, the server MUST send enough data chunks to cover the entire region described by the offset and length of the client's request.",
      },
    ],
    strict: "throw",
    lenient: "finding",
  },
  "error-offset-range": {
    code: "bad-value",
    level: "MUST",
    scope: "session",
    clauses: [
      {
        section: "Structured reply types",
        quote: "which MUST lie within the original offset and length of the request",
      },
    ],
    strict: "throw",
    lenient: "finding",
  },
  "block-status-context-unrequested": {
    code: "bad-value",
    level: "MUST",
    scope: "session",
    clauses: [
      {
        section: "Request types",
        quote:
          "informs the server to limit its replies to the metacontext id(s) in the client's request payload",
        ext: true,
      },
    ],
    strict: "throw",
    lenient: "finding",
  },
  "block-status-context-duplicate": {
    code: "duplicate",
    level: "MUST",
    scope: "session",
    clauses: [
      {
        section: "Structured reply types",
        quote:
          "A successful block status request MUST have exactly one status chunk per negotiated metadata context ID.",
      },
    ],
    strict: "throw",
    lenient: "finding",
  },
  "block-status-context-missing": {
    code: "unexpected-frame",
    level: "MUST",
    scope: "session",
    clauses: [
      {
        section: "Structured reply types",
        quote:
          "A successful block status request MUST have exactly one status chunk per negotiated metadata context ID.",
      },
    ],
    strict: "throw",
    lenient: "finding",
  },
  "block-status-req-one": {
    code: "bad-length",
    level: "MUST",
    scope: "session",
    clauses: [
      {
        section: "Structured reply types",
        quote: "then every reply chunk MUST contain exactly one descriptor",
      },
    ],
    strict: "throw",
    lenient: "finding",
  },
  "block-status-req-one-length": {
    code: "bad-value",
    level: "MUST",
    scope: "session",
    clauses: [
      {
        section: "Structured reply types",
        quote: "that descriptor MUST NOT exceed the *length* of the original request",
      },
    ],
    strict: "throw",
    lenient: "finding",
  },
  "block-status-overrun": {
    code: "bad-value",
    level: "MUST",
    scope: "session",
    clauses: [
      {
        section: "Structured reply types",
        quote:
          "the sum of the *length* fields of the first N-1 extents (if any) MUST be less than the requested length",
      },
    ],
    strict: "throw",
    lenient: "finding",
  },

  // ---- sessions: the server session on the client's bytes (codec/server_session.ts) ------------------------
  "client-flags-unknown": {
    code: "reserved-bits",
    level: "MUST",
    scope: "session",
    clauses: [
      {
        section: "Newstyle negotiation",
        quote: "the server MUST close the TCP connection if it does not recognize the client's flags",
      },
    ],
    strict: "throw",
    lenient: "throw",
  },
  "option-not-fixed": {
    code: "unexpected-frame",
    level: "MUST",
    scope: "session",
    clauses: [
      {
        section: "Newstyle negotiation",
        quote:
          "In non-fixed newstyle only one option can be set (`NBD_OPT_EXPORT_NAME`), and it is not optional.",
      },
    ],
    strict: "throw",
    lenient: "throw",
  },
  "export-name-refused": {
    code: "unexpected-frame",
    level: "MUST",
    scope: "session",
    clauses: [
      {
        section: "Newstyle negotiation",
        quote: "If the server is unwilling to allow the export, it MUST terminate the session.",
      },
    ],
    strict: "throw",
    lenient: "throw",
  },
  "after-disc": {
    code: "unexpected-frame",
    level: "MUST",
    scope: "session",
    clauses: [
      {
        section: "Request types",
        quote: "A client MUST NOT send anything to the server after sending an `NBD_CMD_DISC` command.",
      },
    ],
    strict: "throw",
    lenient: "finding",
  },
  "cookie-in-flight": {
    code: "duplicate",
    level: "SHOULD",
    scope: "session",
    clauses: [
      {
        section: "Transmission",
        quote: "Clients SHOULD use a cookie that is distinct from all other currently pending transactions",
      },
    ],
    strict: "throw",
    lenient: "finding",
  },
  "max-option-length": {
    code: "limit-exceeded",
    level: "LIMIT",
    scope: "session",
    clauses: [{
      section: "ServerSession option maxOptionLength",
      quote:
        "option data above the server session's limit (default 64 KiB) without fixed newstyle, where no reply can refuse it",
    }],
    strict: "throw",
    lenient: "throw",
  },

  // ---- captures (codec/capture.ts) and TCP/IP (codec/tcp.ts) ---------------------------------------------
  "capture-magic": {
    code: "bad-magic",
    level: "FORMAT",
    scope: "capture",
    clauses: [{
      section: "pcap, pcapng",
      quote: "the file starts with a pcap magic or a pcapng Section Header Block",
    }],
    strict: "throw",
    lenient: "throw",
  },
  "capture-max-record-length": {
    code: "limit-exceeded",
    level: "LIMIT",
    scope: "capture",
    clauses: [{
      section: "option maxRecordLength",
      quote: "a record or block longer than the reader's limit",
    }],
    strict: "throw",
    lenient: "throw",
  },
  "capture-truncated": {
    code: "truncated",
    level: "TRACE",
    scope: "capture",
    clauses: [{ section: "pcap, pcapng", quote: "the file ends inside a record or block" }],
    strict: "throw",
    lenient: "finding",
  },
  "pcap-original-length": {
    code: "bad-length",
    level: "FORMAT",
    scope: "capture",
    clauses: [{ section: "pcap record header", quote: "orig_len is at least incl_len" }],
    strict: "finding",
    lenient: "finding",
  },
  "pcapng-byte-order-magic": {
    code: "bad-magic",
    level: "FORMAT",
    scope: "capture",
    clauses: [{
      section: "pcapng Section Header Block",
      quote: "the byte-order magic is 0x1a2b3c4d in either order",
    }],
    strict: "throw",
    lenient: "throw",
  },
  "pcapng-block-length": {
    code: "bad-length",
    level: "FORMAT",
    scope: "capture",
    clauses: [{
      section: "pcapng block",
      quote: "a block's total length is a multiple of 4 and covers its fixed fields",
    }],
    strict: "throw",
    lenient: "throw",
  },
  "pcapng-block-trailer": {
    code: "bad-length",
    level: "FORMAT",
    scope: "capture",
    clauses: [{ section: "pcapng block", quote: "the trailing total length repeats the leading one" }],
    strict: "throw",
    lenient: "throw",
  },
  "pcapng-version": {
    code: "bad-value",
    level: "FORMAT",
    scope: "capture",
    clauses: [{ section: "pcapng Section Header Block", quote: "major version 1" }],
    strict: "throw",
    lenient: "throw",
  },
  "pcapng-captured-length": {
    code: "bad-length",
    level: "FORMAT",
    scope: "capture",
    clauses: [{ section: "pcapng Enhanced Packet Block", quote: "the captured length fits in the block" }],
    strict: "throw",
    lenient: "throw",
  },
  "pcapng-first-block": {
    code: "bad-magic",
    level: "FORMAT",
    scope: "capture",
    clauses: [{ section: "pcapng", quote: "a Section Header Block comes before any other block" }],
    strict: "throw",
    lenient: "throw",
  },
  "pcapng-interface-id": {
    code: "bad-value",
    level: "FORMAT",
    scope: "capture",
    clauses: [{
      section: "pcapng Enhanced Packet Block",
      quote: "the interface id names an interface described earlier",
    }],
    strict: "throw",
    lenient: "throw",
  },
  "pcapng-option-length": {
    code: "bad-length",
    level: "FORMAT",
    scope: "capture",
    clauses: [{ section: "pcapng options", quote: "an option's length fits in its block" }],
    strict: "throw",
    lenient: "throw",
  },
  "capture-link-type": {
    code: "unknown-type",
    level: "FORMAT",
    scope: "capture",
    clauses: [{
      section: "link types",
      quote: "a link type the reader knows (Ethernet, raw IP, Linux cooked, loopback)",
    }],
    strict: "finding",
    lenient: "finding",
  },
  "capture-snaplen": {
    code: "truncated",
    level: "TRACE",
    scope: "capture",
    clauses: [{ section: "pcap, pcapng", quote: "a packet cut short by the capture's snap length" }],
    strict: "finding",
    lenient: "finding",
  },
  "ip-version": {
    code: "bad-value",
    level: "FORMAT",
    scope: "capture",
    clauses: [{ section: "IPv4, IPv6", quote: "the version field is 4 or 6" }],
    strict: "finding",
    lenient: "finding",
  },
  "ipv4-header-length": {
    code: "bad-length",
    level: "FORMAT",
    scope: "capture",
    clauses: [{
      section: "IPv4 (RFC 791)",
      quote: "the header length is at least 20 bytes and fits in the packet",
    }],
    strict: "finding",
    lenient: "finding",
  },
  "ipv4-total-length": {
    code: "bad-length",
    level: "FORMAT",
    scope: "capture",
    clauses: [{
      section: "IPv4 (RFC 791)",
      quote: "the total length covers the header and fits in the packet",
    }],
    strict: "finding",
    lenient: "finding",
  },
  "ipv6-payload-length": {
    code: "bad-length",
    level: "FORMAT",
    scope: "capture",
    clauses: [{ section: "IPv6 (RFC 8200)", quote: "the payload length fits in the packet" }],
    strict: "finding",
    lenient: "finding",
  },
  "ip-fragment": {
    code: "unknown-type",
    level: "TRACE",
    scope: "capture",
    clauses: [{ section: "IPv4, IPv6", quote: "a fragmented IP packet (not reassembled)" }],
    strict: "finding",
    lenient: "finding",
  },
  "tcp-header-length": {
    code: "bad-length",
    level: "FORMAT",
    scope: "capture",
    clauses: [{
      section: "TCP (RFC 9293)",
      quote: "the data offset is at least 5 words and fits in the segment",
    }],
    strict: "finding",
    lenient: "finding",
  },
  "tcp-gap": {
    code: "truncated",
    level: "TRACE",
    scope: "capture",
    clauses: [{ section: "TCP reassembly", quote: "sequence numbers skip bytes the capture never shows" }],
    strict: "finding",
    lenient: "finding",
  },
  "tcp-out-of-window": {
    code: "bad-value",
    level: "TRACE",
    scope: "capture",
    clauses: [{ section: "TCP reassembly", quote: "a segment far outside the expected sequence window" }],
    strict: "finding",
    lenient: "finding",
  },
  "tcp-retransmission-mismatch": {
    code: "bad-value",
    level: "TRACE",
    scope: "capture",
    clauses: [{
      section: "TCP reassembly",
      quote: "a retransmission whose bytes differ from the first copy",
    }],
    strict: "finding",
    lenient: "finding",
  },
} as const;

// The catalogue has the shape of `Rule` (checked here: `satisfies` would cost the inferred declaration that
// isolatedDeclarations needs for RuleId).
const _shape: Readonly<Record<string, Rule>> = RULES;
void _shape;

/**
 * Every rule id of the catalogue: the keys of {@link RULES}.
 *
 * @example
 * ```ts
 * import type { RuleId } from "@nbd/codec";
 * const id: RuleId = "chunk-none-done";
 * console.log(typeof id);
 * ```
 */
export type RuleId = keyof typeof RULES;

/**
 * Whether a string is a rule id of the catalogue.
 *
 * @example
 * ```ts
 * import { isRuleId } from "@nbd/codec";
 * console.log(isRuleId("chunk-none-done"), isRuleId("no-such-rule")); // true false
 * ```
 */
export function isRuleId(value: string): value is RuleId {
  return Object.hasOwn(RULES, value);
}

/**
 * A field whose unknown bits or values the spec tells the receiver to ignore: they are kept in the decoded
 * frame (unknown flags named as hex by `flagNames`), never reported, in strict mode as in lenient.
 *
 * @example
 * ```ts
 * import { IGNORED_BY_RECEIVER } from "@nbd/codec";
 * console.log(IGNORED_BY_RECEIVER.map((x) => x.field).includes("reply flags")); // true
 * ```
 */
export interface IgnoredField {
  /** The field, as the spec names it. */
  readonly field: string;
  /** The clause telling the receiver to ignore unknown bits. */
  readonly clause: RuleClause;
}

/**
 * The fields whose unknown bits or values are not violations, with the clause that says so.
 *
 * @example
 * ```ts
 * import { IGNORED_BY_RECEIVER } from "@nbd/codec";
 * for (const x of IGNORED_BY_RECEIVER) console.log(x.field, "-", x.clause.quote);
 * ```
 */
export const IGNORED_BY_RECEIVER: readonly IgnoredField[] = Object.freeze([
  {
    field: "handshake flags",
    clause: {
      section: S.newstyle,
      quote: "The client SHOULD ignore any handshake flags it does not recognize",
    },
  },
  {
    field: "transmission flags",
    clause: { section: S.transmissionFlags, quote: "Clients SHOULD ignore unknown flags." },
  },
  {
    field: "reply flags",
    clause: {
      section: "Structured and extended header reply flags",
      quote: "Clients MUST ignore unrecognized flags.",
    },
  },
  {
    field: "base:allocation status flags",
    clause: {
      section: "`base:allocation` metadata context",
      quote: "Servers SHOULD set it to all-zero; clients MUST ignore unknown flags.",
    },
  },
  {
    field: "NBD_INFO_INIT_STATE flags (proposal)",
    clause: {
      section: "NBD_INFO_INIT_STATE proposal (nbd list, 2020-02-10; never merged)",
      quote: "other bits reserved; clients must ignore unknown bits",
    },
  },
  {
    field: "metadata context id in NBD_OPT_LIST_META_CONTEXT replies",
    clause: {
      section: S.optionTypes,
      quote:
        "The metadata context ID in these replies is reserved and SHOULD be set to zero; clients MUST disregard it.",
    },
  },
  {
    field: "information requests a server does not understand (NBD_OPT_INFO, NBD_OPT_GO)",
    clause: {
      section: "Option types",
      quote: "The server MUST ignore any information requests it does not understand.",
    },
  },
  {
    field: "metadata context queries of an unknown namespace",
    clause: {
      section: "Option types",
      quote: "the server MUST ignore query strings belonging to an unknown namespace",
    },
  },
  {
    field: "data sent with NBD_OPT_ABORT",
    clause: {
      section: "Option types",
      quote:
        "a server SHOULD ignore any data sent by the client rather than rejecting the request as invalid",
    },
  },
  {
    field: "error values (simple replies and error chunks)",
    clause: {
      section: "Error values",
      quote:
        "The client SHOULD treat an unexpected error value as if it had been `NBD_EINVAL`, rather than disconnecting from the server.",
    },
  },
  {
    field: "information types in NBD_REP_INFO",
    clause: {
      section: S.optionTypes,
      quote: "MUST ignore information types that it does not recognize.",
    },
  },
]);
