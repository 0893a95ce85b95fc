/**
 * `nbd-codec conform client`: not written yet (see docs/conformance.md).
 *
 * @module
 */
import type { ConformCase, ConformResult } from "../codec/conform.ts";
import { type ConformIo, ConformUsageError } from "./conform.ts";

/** Options of `conform client`. */
export interface ClientRunOptions {
  readonly port: number | undefined;
  readonly profile: string | undefined;
  readonly command: string[] | undefined;
  readonly common: {
    json: boolean;
    junit: string | undefined;
    timeoutMs: number;
    only: string[] | undefined;
  };
}

/** Runs `conform client`. */
export function runConformClient(
  _o: ClientRunOptions,
  _io: ConformIo,
  _report: (
    r: readonly ConformResult[],
    c: readonly ConformCase[],
    suite: string,
    o: ClientRunOptions["common"],
    io: ConformIo,
  ) => Promise<number>,
): Promise<number> {
  throw new ConformUsageError("conform client is not implemented yet");
}
