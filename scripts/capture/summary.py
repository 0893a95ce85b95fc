#!/usr/bin/python3
"""Print a markdown table of the recorded captures (from NAME.meta.json summaries); with
--update README.md, also replace the table between the summary markers in that file."""
import glob
import json
import os
import sys

d = sys.argv[1]
rows = ["| capture | frames | by kind | c2s / s2c bytes | log claims checked |", "|---|---|---|---|---|"]
for p in sorted(glob.glob(os.path.join(d, "*.meta.json"))):
    m = json.load(open(p))
    n = m["name"]
    s = m["summary"]
    kinds = ", ".join(f"{k} {v}" for k, v in s["kinds"].items())
    sizes = f"{os.path.getsize(os.path.join(d, n + '.c2s.bin'))} / {os.path.getsize(os.path.join(d, n + '.s2c.bin'))}"
    rows.append(f"| `{n}` | {s['frames']} | {kinds} | {sizes} | {s['logClaimsChecked']} |")
table = "\n".join(rows)
print(table)
if len(sys.argv) > 3 and sys.argv[2] == "--update":
    readme = sys.argv[3]
    text = open(readme).read()
    a = text.index("<!-- summary:begin")
    a = text.index("\n", a) + 1
    b = text.index("<!-- summary:end -->")
    open(readme, "w").write(text[:a] + table + "\n" + text[b:])
