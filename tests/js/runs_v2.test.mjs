// The generated v2 clients the SDK now steers users to (`client.runs.query()`, `.retrieve()`,
// `client.traces.*`): upper-case selects and enums, cursor pages, the 24-hour default window.
import assert from "node:assert/strict";
import { test } from "node:test";
import { randomUUID } from "node:crypto";

import { traceable } from "langsmith/traceable";

import { api, client, collect, eventually, startSextant } from "./harness.mjs";

const server = await startSextant();

test("client.runs.query pages through a project's runs with selects; retrieve reads one", async () => {
  const c = client();
  const project = `js-v2-${randomUUID()}`;
  const leaf = traceable(async (i) => ({ i }), { name: "leaf", run_type: "llm", client: c, project_name: project });
  const root = traceable(async () => {
    for (let i = 0; i < 5; i++) await leaf(i);
    return { done: true };
  }, { name: "root", client: c, project_name: project });
  await root();
  await c.awaitPendingTraceBatches();
  await eventually(async () => (await collect(c.listRuns({ projectName: project }))).length === 6, 15_000, "6 runs");
  const proj = await c.readProject({ projectName: project });

  const seen = [];
  for await (const run of c.runs.query({ project_ids: [proj.id], selects: ["ID", "NAME", "RUN_TYPE", "STATUS", "PARENT_RUN_IDS", "IS_ROOT", "LATENCY_SECONDS"], page_size: 2 })) {
    seen.push(run);
  }
  assert.equal(seen.length, 6);
  assert.equal(new Set(seen.map((r) => r.id)).size, 6, "no run twice across pages");
  const rootRun = seen.find((r) => r.name === "root");
  assert.equal(rootRun.run_type, "CHAIN");
  assert.equal(rootRun.status, "SUCCESS");
  assert.equal(rootRun.is_root, true);
  assert.deepEqual(rootRun.parent_run_ids, []);
  const leaves = seen.filter((r) => r.name === "leaf");
  assert.equal(leaves.length, 5);
  assert.ok(leaves.every((r) => r.run_type === "LLM" && r.parent_run_ids.at(-1) === rootRun.id && r.is_root === false));
  assert.ok(typeof rootRun.latency_seconds === "number");
  assert.equal(rootRun.inputs, undefined, "unselected fields are omitted");

  const filtered = await collect(c.runs.query({ project_ids: [proj.id], is_root: true, selects: ["NAME"] }));
  assert.deepEqual(filtered.map((r) => r.name), ["root"]);
  const onlyId = await collect(c.runs.query({ project_ids: [proj.id], filter: 'eq(name, "root")' }));
  assert.deepEqual(onlyId, [{ id: rootRun.id }]);
  // Outside the window: nothing.
  const old = await collect(c.runs.query({ project_ids: [proj.id], max_start_time: "2020-01-01T00:00:00Z" }));
  assert.deepEqual(old, []);

  const one = await c.runs.retrieve(leaves[0].id, { project_id: proj.id, selects: ["NAME", "OUTPUTS", "PROJECT_ID", "TRACE_ID"] });
  assert.equal(one.name, "leaf");
  assert.equal(one.project_id, proj.id);
  assert.equal(one.trace_id, rootRun.id);
  assert.ok(one.outputs && typeof one.outputs.i === "number");

  const traces = await collect(c.traces.query({ project_id: proj.id, selects: ["NAME", "TOTAL_TOKENS"] }));
  assert.equal(traces.length, 1);
  assert.equal(traces[0].root_run.name, "root");
  assert.equal(typeof traces[0].trace_aggregates.total_tokens, "number");
  const treeRuns = await c.traces.listRuns(rootRun.id, { project_id: proj.id, selects: ["NAME"] });
  assert.equal(treeRuns.items.length, 6);
  assert.equal(treeRuns.items[0].name, "root", "runs in tree order");
});

test("v2 errors: a wrong project is a 404, a missing project_ids a 422, an unknown field a 422", async () => {
  const c = client();
  const project = await c.createProject({ projectName: `js-v2e-${randomUUID()}` });
  const other = await c.createProject({ projectName: `js-v2o-${randomUUID()}` });
  const id = randomUUID();
  await c.createRun({ id, name: "r", run_type: "chain", inputs: {}, start_time: Date.now(), project_name: project.name });
  await eventually(() => c.readRun(id), 10_000, "the run");
  const wrong = await api(server.url, "GET", `/api/v2/runs/${id}?project_id=${other.id}`);
  assert.equal(wrong.status, 404);
  const missing = await api(server.url, "POST", "/api/v2/runs/query", {});
  assert.equal(missing.status, 422);
  assert.match(JSON.stringify(missing.json), /project_ids/);
  const unknown = await api(server.url, "POST", "/api/v2/runs/query", { project_ids: [project.id], bogus: 1 });
  assert.equal(unknown.status, 422);
  assert.match(JSON.stringify(unknown.json), /bogus/);
});

test("client.runs.share and client.public.runs: a shared trace is readable by its token alone, until unshared", async () => {
  const c = client();
  const project = `js-v2s-${randomUUID()}`;
  const child = traceable(async () => "leaf", { name: "child", run_type: "tool", client: c, project_name: project });
  const root = traceable(async () => child(), { name: "shared_root", client: c, project_name: project });
  await root();
  await c.awaitPendingTraceBatches();
  const [rootRun] = await eventually(async () => {
    const rs = await collect(c.listRuns({ projectName: project, isRoot: true }));
    return rs.length === 1 ? rs : null;
  }, 10_000, "the root run");
  const { share_token } = await c.runs.share.create(rootRun.id, { session_id: rootRun.session_id, trace_id: rootRun.trace_id });
  assert.match(share_token, /^[0-9a-f-]{36}$/);
  const page = await c.public.runs.query(share_token, { selects: ["NAME", "IS_ROOT"] });
  assert.deepEqual(page.items.map((r) => r.name), ["shared_root", "child"]);
  const one = await c.public.runs.retrieve(rootRun.id, { share_token, selects: ["NAME", "OUTPUTS"], start_time: rootRun.start_time });
  assert.equal(one.name, "shared_root");
  // No key needed.
  const anon = await fetch(`${server.url}/api/v2/public/${share_token}/runs/query`, { method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
  assert.equal(anon.status, 200);
  await c.runs.share.delete(rootRun.trace_id, { session_id: rootRun.session_id });
  const gone = await fetch(`${server.url}/api/v2/public/${share_token}/runs/query`, { method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
  assert.equal(gone.status, 404);
});
