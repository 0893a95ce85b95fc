/**
 * The command line's argument walker, shared by `dissect`/`stats`, `vectors` and `conform`: each argument
 * once, with `--name=value` split, a value taken from the next argument when not given with `=`, and the
 * arguments after `--` handed over whole.
 *
 * @module
 */

/** One argument as the walker gives it. */
export interface Arg {
  /** The argument, without its `=value` part. */
  readonly name: string;
  /** Its value: the part after `=`, else the next argument (a usage error when there is none). */
  value(): string;
  /** A usage error when the argument came with `=value`. */
  noValue(): void;
  /** The arguments after this one, which the walk then skips (for `-- COMMAND ...`). */
  rest(): string[];
}

/** Walks `list`; `usage` makes the error for a missing or unwanted value. */
export function* walkArgs(list: readonly string[], usage: (message: string) => Error): Generator<Arg> {
  for (let i = 0; i < list.length; i++) {
    let name = list[i]!;
    let given: string | undefined;
    const eq = name.startsWith("--") ? name.indexOf("=") : -1;
    if (eq > 0) {
      given = name.slice(eq + 1);
      name = name.slice(0, eq);
    }
    yield {
      name,
      value: () => {
        if (given !== undefined) return given;
        const v = list[++i];
        if (v === undefined) throw usage(`${name} needs a value`);
        return v;
      },
      noValue: () => {
        if (given !== undefined) throw usage(`${name} takes no value`);
      },
      rest: () => {
        const r = list.slice(i + 1);
        i = list.length;
        return r;
      },
    };
  }
}
