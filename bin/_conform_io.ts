/**
 * What `bin/conform.ts` and `bin/conform_client.ts` share: where output goes, and the usage error.
 *
 * @module
 */

/** Where conform writes (the CLI's io has this shape). */
export interface ConformIo {
  stdout(text: string): void | Promise<void>;
  stderr(text: string): void;
}

/** Bad arguments: exit status 2. */
export class ConformUsageError extends Error {}
