// Test helper: every place in codec/ that names a rule id, found by reading the sources' syntax trees (so a
// rule added by any file, with any helper, is seen): an argument passed to a parameter named `rule` of a
// function, method or constructor declared in codec/, or a `rule:` property of an object literal. The
// `code` given next to it (a parameter named `code`, or a sibling `code:` property) is kept when it is a
// literal. A rule id built from a template is returned as its source text (so that it fails the catalogue
// test): ids must be literals to be found.
import { readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import ts from "typescript";

export interface RuleSite {
  readonly rule: string;
  readonly code: string | undefined;
  /** The function, method or class called with the rule (`report`, `fail`, ...), or `"rule:"` for a property. */
  readonly via: string;
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
  } else if (ts.isParenthesizedExpression(e) || ts.isAsExpression(e)) literals(e.expression, out);
  return out;
}

/** Every rule id named in codec/*.ts, with where. */
export function ruleSites(): RuleSite[] {
  const files = readdirSync(CODEC_DIR).filter((f) => f.endsWith(".ts")).sort();
  const sources = files.map((f) =>
    ts.createSourceFile(f, readFileSync(CODEC_DIR + f, "utf8"), ts.ScriptTarget.Latest, true)
  );
  // callee name -> index of its `rule` parameter and of its `code` parameter
  const params = new Map<string, { rule: number; code: number }>();
  for (const sf of sources) {
    const visit = (n: ts.Node): void => {
      if (ts.isFunctionDeclaration(n) || ts.isMethodDeclaration(n) || ts.isConstructorDeclaration(n)) {
        const names = n.parameters.map((p) => p.name.getText(sf));
        const rule = names.indexOf("rule");
        if (rule >= 0) {
          const owner = ts.isConstructorDeclaration(n) ? (n.parent as ts.ClassDeclaration).name : n.name;
          if (owner !== undefined) params.set(owner.getText(sf), { rule, code: names.indexOf("code") });
        }
      }
      ts.forEachChild(n, visit);
    };
    visit(sf);
  }
  const out: RuleSite[] = [];
  for (const sf of sources) {
    const at = (n: ts.Node): number => sf.getLineAndCharacterOfPosition(n.getStart(sf)).line + 1;
    const visit = (n: ts.Node): void => {
      if ((ts.isCallExpression(n) || ts.isNewExpression(n)) && n.arguments !== undefined) {
        const callee = n.expression;
        const name = ts.isPropertyAccessExpression(callee) ? callee.name.text : callee.getText(sf);
        const p = params.get(name);
        if (p !== undefined) {
          const code = p.code >= 0 ? literals(n.arguments[p.code])[0] : undefined;
          const arg = n.arguments[p.rule];
          if (arg !== undefined && ts.isTemplateExpression(arg)) {
            out.push({ rule: arg.getText(sf), code, via: name, file: sf.fileName, line: at(n) });
          }
          for (const rule of literals(arg)) {
            out.push({ rule, code, via: name, file: sf.fileName, line: at(n) });
          }
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
        if (ts.isTemplateExpression(n.initializer)) {
          out.push({ rule: n.initializer.getText(sf), code, via: "rule:", file: sf.fileName, line: at(n) });
        }
        for (const rule of literals(n.initializer)) {
          out.push({ rule, code, via: "rule:", file: sf.fileName, line: at(n) });
        }
      }
      ts.forEachChild(n, visit);
    };
    visit(sf);
  }
  return out;
}
