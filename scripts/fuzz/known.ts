// KNOWN DEFECTS, excluded from failing the fuzz campaign until their fixes are merged.
//
// These are exactly the defects that issue 15, section 1, lists (and that other branches fix): the
// campaign still checks for them, counts them and reports them as "known", but does not fail on them.
// Each entry names the defect, the checks that show it and its minimized reproductions under
// test/regressions/. test/fuzz_regressions.test.ts asserts that each reproduction still shows its defect:
// once a fix is merged that test fails, and the entry (with its `known` mark in the regression files) is to
// be removed, so the reproduction becomes an ordinary regression test that must pass.
//
// Nothing else belongs here: any other finding fails the campaign.

/** What a finding says about itself, enough to tell which known defect (if any) it is. */
export interface FindingInfo {
  readonly target: string;
  readonly check: string;
  readonly message: string;
}

/** A known defect of issue 15, section 1. */
export interface KnownDefect {
  /** Stable id: "15.1.N", N the item of the issue's list (7: the "also worth a look" item). */
  readonly id: string;
  /** The defect, in the issue's words. */
  readonly defect: string;
  /** Whether a finding is this defect. */
  readonly matches: (f: FindingInfo) => boolean;
  /** Its minimized reproductions, files of test/regressions/. */
  readonly reproductions: readonly string[];
}

export const KNOWN_DEFECTS_ISSUE_15_1: readonly KnownDefect[] = [
  {
    id: "15.1.1",
    defect:
      "The conversation decoder holds one direction without limit (maxBufferedBytes not applied while " +
      "the other side has shown nothing the bytes can be matched with).",
    matches: (f) =>
      f.target === "limits" && f.check === "memory-limit" && f.message.startsWith("conversation:") &&
      / silent:/.test(f.message),
    reproductions: ["known-15.1.1-limits-memory-limit.json"],
  },
  {
    id: "15.1.2",
    defect:
      "Findings depend on how the bytes are split with payloadViews: an OFFSET_DATA chunk whose bytes " +
      "arrive in two pushes skips its header checks (reply-flags-reserved, reply-header-style).",
    matches: (f) => f.check === "split-mismatch-payload-views-findings",
    reproductions: ["known-15.1.2-stream-server-split-mismatch-payload-views.json"],
  },
  {
    id: "15.1.3",
    defect: "Strict errors carry a split-dependent offset (counted from the frame's start when the frame " +
      "spans pushes).",
    matches: (f) => f.check === "strict-split-offset",
    reproductions: ["known-15.1.3-stream-client-strict-split-offset.json"],
  },
  {
    id: "15.1.4",
    defect: "The length of undecodable and tls notices depends on the split (whatever was buffered).",
    matches: (f) =>
      f.check === "split-mismatch-notice-length" || f.check === "conversation-mismatch-notice-length",
    reproductions: [
      "known-15.1.4-stream-client-split-mismatch-notice-length.json",
      "known-15.1.4-conversation-conversation-mismatch-notice-length.json",
    ],
  },
  {
    id: "15.1.5",
    defect: "decodeConversation and ConversationDecoder.push disagree after a STARTTLS ACK nobody asked " +
      "for (tls against truncated).",
    matches: (f) => f.target === "conversation" && f.check === "conversation-mismatch-tls",
    reproductions: ["known-15.1.5-conversation-conversation-mismatch-tls.json"],
  },
  {
    id: "15.1.6",
    defect: "TCP bytes dropped without a gap notice: a capture without the SYN, first segments reordered, " +
      "loses the bytes before the first segment seen.",
    matches: (f) => f.check === "tcp-silent-loss-prefix",
    reproductions: [
      "known-15.1.6-tcp-reorder-tcp-silent-loss-prefix.json",
      "known-15.1.6-tcp-reorder-late-syn.json",
    ],
  },
  {
    id: "15.1.7",
    defect: "The capture reader allocates a record's announced length up front (within its 4 MiB limit) " +
      "instead of as the bytes arrive.",
    matches: (f) =>
      f.check === "capture-allocation" ||
      (f.target === "limits" && f.check === "memory-limit" && /^pcap(ng)? record/.test(f.message)),
    reproductions: ["known-15.1.7-capture-capture-allocation.json"],
  },
];

/** The known defect a finding is, if any. */
export function knownDefect(f: FindingInfo): KnownDefect | undefined {
  return KNOWN_DEFECTS_ISSUE_15_1.find((k) => k.matches(f));
}
