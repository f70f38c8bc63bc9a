// The README's JS quick start, run as written (from the ```js block after "JS/TS" in "Quick
// start") against a fresh server, ten times: the run must show up every time.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync, rmSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { test } from "node:test";

import { startSextant } from "./harness.mjs";

const HERE = dirname(fileURLToPath(import.meta.url));
const README = readFileSync(resolve(HERE, "../../README.md"), "utf8");

await startSextant();

test("the README's JS quick start prints the traced run, every time", () => {
  const section = README.slice(README.indexOf("## Quick start"));
  const m = section.match(/JS\/TS[^\n]*\n\s*```js\n([\s\S]*?)```/);
  assert.ok(m, "README quick start has no ```js block");
  // Inside tests/js so that `langsmith` resolves to the pinned package.
  const file = join(HERE, ".readme-quickstart.mjs");
  writeFileSync(file, m[1]);
  try {
    for (let attempt = 1; attempt <= 10; attempt++) {
      const out = execFileSync(process.execPath, [file], { env: process.env, encoding: "utf8", timeout: 60_000 });
      // console.log prints the array as a JS literal, over several lines once it grows.
      const names = JSON.parse(out.slice(out.indexOf("["), out.lastIndexOf("]") + 1).replaceAll("'", '"'));
      assert.deepEqual(names, Array(attempt).fill("answer"), out);
    }
  } finally {
    rmSync(file, { force: true });
  }
});
