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

// 15.1.1 to 15.1.7, 15.1.1b and M.1 are fixed: their reproductions are ordinary regression files now
// (test/regressions/issue-*.json), which must pass. Nothing is known and not fixed: the list is empty.
export const KNOWN_DEFECTS_ISSUE_15_1: readonly KnownDefect[] = [];

/** The known defect a finding is, if any. */
export function knownDefect(f: FindingInfo): KnownDefect | undefined {
  return KNOWN_DEFECTS_ISSUE_15_1.find((k) => k.matches(f));
}
