// Test helper: every place in codec/ that names a rule id, found by reading the sources' syntax trees with
// TypeScript's type checker (so a rule added by any file, with any helper, is seen): an argument passed to a
// parameter named `rule` of the function, method, arrow function, function type or constructor the call
// resolves to, or a `rule:` property of an object literal. The `code` given next to it (a parameter named
// `code`, or a sibling `code:` property) is kept when it is a literal. A rule id built from a template is
// returned as its source text (so that it fails the catalogue test): ids must be literals to be found.
//
// Calls are resolved to their declaration, not matched by name: two helpers called `fail` in two files are two
// functions. A `rule` parameter declared with the type `LocalErrorRule` (codec/session.ts: the NbdLocalError
// constructor and the helpers that build local errors) marks a local-error site: the local program's mistake,
// a namespace apart from the catalogue of peer-byte rules.
import { readdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import ts from "typescript";

export interface RuleSite {
  readonly rule: string;
  readonly code: string | undefined;
  /** The function, method or class called with the rule (`report`, `fail`, ...), or `"rule:"` for a property. */
  readonly via: string;
  /** True when the rule is an `NbdLocalError` id (its parameter is typed `LocalErrorRule`), not a catalogue id. */
  readonly local: boolean;
  readonly file: string;
  readonly line: number;
}

const CODEC_DIR = fileURLToPath(new URL("../codec/", import.meta.url));

function literals(e: ts.Expression | undefined, out: string[] = []): string[] {
  if (e === undefined) return out;
  if (ts.isStringLiteral(e) || ts.isNoSubstitutionTemplateLiteral(e)) out.push(e.text);
  else if (ts.isConditionalExpression(e)) {
    literals(e.whenTrue, out);
    literals(e.whenFalse, out);
  } else if (
    ts.isBinaryExpression(e) &&
    (e.operatorToken.kind === ts.SyntaxKind.QuestionQuestionToken ||
      e.operatorToken.kind === ts.SyntaxKind.BarBarToken)
  ) {
    // `f?.rule ?? "fallback"`: the fallback is a rule id too.
    literals(e.right, out);
  } else if (ts.isParenthesizedExpression(e) || ts.isAsExpression(e)) literals(e.expression, out);
  return out;
}

/** The parameters of the declaration a call resolves to, when it has them. */
function parametersOf(checker: ts.TypeChecker, n: ts.CallExpression | ts.NewExpression) {
  const decl = checker.getResolvedSignature(n)?.getDeclaration();
  if (decl === undefined || !("parameters" in decl)) return undefined;
  return (decl as ts.SignatureDeclaration).parameters;
}

/** Every rule id named in codec/*.ts, with where. */
export function ruleSites(): RuleSite[] {
  const files = readdirSync(CODEC_DIR).filter((f) => f.endsWith(".ts")).sort().map((f) => CODEC_DIR + f);
  const program = ts.createProgram(files, {
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.ESNext,
    moduleResolution: ts.ModuleResolutionKind.Bundler,
    allowImportingTsExtensions: true,
    lib: ["lib.es2022.d.ts"],
    types: [],
    strict: true,
    noEmit: true,
    skipLibCheck: true,
  });
  const checker = program.getTypeChecker();
  const out: RuleSite[] = [];
  for (const path of files) {
    const sf = program.getSourceFile(path)!;
    const file = path.slice(CODEC_DIR.length);
    const at = (n: ts.Node): number => sf.getLineAndCharacterOfPosition(n.getStart(sf)).line + 1;
    const visit = (n: ts.Node): void => {
      if ((ts.isCallExpression(n) || ts.isNewExpression(n)) && n.arguments !== undefined) {
        const params = parametersOf(checker, n);
        const names = params?.map((p) => p.name.getText()) ?? [];
        const r = names.indexOf("rule");
        if (params !== undefined && r >= 0) {
          const c = names.indexOf("code");
          const callee = n.expression;
          const via = ts.isPropertyAccessExpression(callee) ? callee.name.text : callee.getText(sf);
          const code = c >= 0 ? literals(n.arguments[c])[0] : undefined;
          const local = params[r]!.type?.getText() === "LocalErrorRule";
          const arg = n.arguments[r];
          if (arg !== undefined && ts.isTemplateExpression(arg)) {
            out.push({ rule: arg.getText(sf), code, via, local, file, line: at(n) });
          }
          for (const rule of literals(arg)) out.push({ rule, code, via, local, file, line: at(n) });
        }
      }
      if (
        ts.isPropertyAssignment(n) && n.name.getText(sf) === "rule" && ts.isObjectLiteralExpression(n.parent)
      ) {
        const sibling = n.parent.properties.find((q) =>
          ts.isPropertyAssignment(q) && q.name.getText(sf) === "code"
        );
        const code = sibling !== undefined && ts.isPropertyAssignment(sibling)
          ? literals(sibling.initializer)[0]
          : undefined;
        const site = { code, via: "rule:", local: false, file, line: at(n) };
        if (ts.isTemplateExpression(n.initializer)) out.push({ rule: n.initializer.getText(sf), ...site });
        for (const rule of literals(n.initializer)) out.push({ rule, ...site });
      }
      ts.forEachChild(n, visit);
    };
    visit(sf);
  }
  return out;
}
