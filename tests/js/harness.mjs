// Test harness for the JS/TS SDK suite: starts a real `sextant serve` (the binary the Rust build
// produced, or SEXTANT_BIN) on free loopback ports over a fresh data directory, waits for
// /readyz, and hands out clients of the official `langsmith` npm package configured as a user
// would (LANGSMITH_ENDPOINT, LANGSMITH_API_KEY, LANGSMITH_TRACING). Every LANGSMITH_* /
// LANGCHAIN_* variable from the caller's shell is cleared first, so nothing is sent elsewhere.
import { spawn } from "node:child_process";
import { mkdtempSync, openSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { after } from "node:test";

import { Client } from "langsmith";

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
export const API_KEY = "sextant-js-e2e";

for (const k of Object.keys(process.env)) {
  if (k.startsWith("LANGSMITH_") || k.startsWith("LANGCHAIN_")) delete process.env[k];
}

function freePort() {
  return new Promise((ok, fail) => {
    const srv = createServer();
    srv.unref();
    srv.on("error", fail);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => ok(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Starts a server for the calling test file (call it at the top level: `after` registers its stop on the file's root test, SIGTERM when the file's tests end). */
export async function startSextant() {
  const bin = process.env.SEXTANT_BIN ?? join(REPO, "target", "debug", "sextant");
  const dataDir = mkdtempSync(join(tmpdir(), "sextant-js-"));
  const logPath = join(dataDir, "server.log");
  const log = openSync(logPath, "a");
  const [http, grpc] = [await freePort(), await freePort()];
  const env = { ...process.env, NO_COLOR: "1", RUST_BACKTRACE: "1" };
  const proc = spawn(bin, ["serve", "--http", `127.0.0.1:${http}`, "--grpc", `127.0.0.1:${grpc}`, "--data-dir", join(dataDir, "data")], {
    env,
    stdio: ["ignore", log, log],
  });
  const url = `http://127.0.0.1:${http}`;
  const logTail = () => {
    try {
      return readFileSync(logPath, "utf8").split("\n").slice(-60).join("\n");
    } catch {
      return "(no log)";
    }
  };
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`sextant exited with ${proc.exitCode}\n${logTail()}`);
    try {
      const r = await fetch(`${url}/readyz`);
      if (r.status === 200) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`sextant not ready in 60 s\n${logTail()}`);
    await sleep(100);
  }
  process.env.LANGSMITH_ENDPOINT = url;
  process.env.LANGSMITH_API_KEY = API_KEY;
  process.env.LANGSMITH_TRACING = "true";
  after(async () => {
    proc.kill("SIGTERM");
    await new Promise((r) => (proc.exitCode !== null ? r() : proc.once("exit", r)));
    rmSync(dataDir, { recursive: true, force: true });
  });
  return { url, logTail };
}

/** A client as a user would build one: from the environment `startSextant` set. */
export function client(options = {}) {
  return new Client({ autoBatchTracing: true, ...options });
}

/** Polls `fn` until it returns a truthy value (projection is asynchronous), up to `ms`. */
export async function eventually(fn, ms = 10_000, what = "condition") {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; last: ${last?.stack ?? JSON.stringify(last)}`);
    await sleep(50);
  }
}

/** Every item of an async iterator. */
export async function collect(iter) {
  const out = [];
  for await (const x of iter) out.push(x);
  return out;
}

/** A raw request to the server with the suite's key (for checks the SDK does not expose). */
export async function api(url, method, path, body) {
  const r = await fetch(`${url}${path}`, {
    method,
    headers: { "x-api-key": API_KEY, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = text;
  }
  return { status: r.status, json };
}
