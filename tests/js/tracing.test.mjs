// Tracing with the JS SDK: `traceable` (nested, with a failing child), RunTree, createRun /
// updateRun with epoch-millisecond times, flushing, and reading the tree back with listRuns.
import assert from "node:assert/strict";
import { before, test } from "node:test";
import { randomUUID } from "node:crypto";

import { traceable } from "langsmith/traceable";
import { RunTree } from "langsmith/run_trees";

import { api, client, collect, eventually, startSextant } from "./harness.mjs";

const server = await startSextant();
const warnings = [];
before(() => {
  // The SDK reports failed uploads only as console warnings: any such warning is a lost trace.
  for (const level of ["warn", "error"]) {
    const orig = console[level];
    console[level] = (...args) => {
      warnings.push(args.map(String).join(" "));
      orig(...args);
    };
  }
});

test("nested traceable with an erroring child is stored as one tree with times from epoch ms", async () => {
  const c = client();
  const project = `js-tracing-${randomUUID()}`;
  const started = Date.now();
  const tool = traceable(async (x) => {
    throw new Error(`tool failed on ${x}`);
  }, { name: "flaky_tool", run_type: "tool", client: c, project_name: project });
  const llm = traceable(async (prompt) => ({ text: prompt.toUpperCase() }), {
    name: "fake_llm", run_type: "llm", client: c, project_name: project,
  });
  const pipeline = traceable(async (q) => {
    const out = await llm(q);
    try {
      await tool(q);
    } catch {
      // the parent survives its child's failure
    }
    return { answer: out.text };
  }, { name: "pipeline", client: c, project_name: project, tags: ["js-suite"], metadata: { user_id: "u-7" } });

  assert.deepEqual(await pipeline("hello"), { answer: "HELLO" });
  await c.awaitPendingTraceBatches();

  const runs = await eventually(async () => {
    const rs = await collect(c.listRuns({ projectName: project }));
    return rs.length === 3 && rs.every((r) => r.end_time) ? rs : null;
  }, 15_000, "three finished runs");
  const byName = Object.fromEntries(runs.map((r) => [r.name, r]));
  const root = byName.pipeline;
  assert.equal(root.parent_run_id ?? null, null);
  assert.deepEqual(root.outputs, { answer: "HELLO" });
  assert.deepEqual(root.tags, ["js-suite"]);
  assert.equal(root.extra.metadata.user_id, "u-7");
  for (const child of [byName.fake_llm, byName.flaky_tool]) {
    assert.equal(child.parent_run_id, root.id);
    assert.equal(child.trace_id, root.id);
    assert.ok(child.dotted_order.startsWith(root.dotted_order + "."), child.dotted_order);
  }
  assert.equal(byName.fake_llm.run_type, "llm");
  assert.match(byName.flaky_tool.error, /tool failed on hello/);
  assert.equal(byName.flaky_tool.status, "error");
  // Times were sent as epoch milliseconds: they must read back as the same instants.
  const start = Date.parse(root.start_time + (root.start_time.endsWith("Z") ? "" : "Z"));
  const end = Date.parse(root.end_time + (root.end_time.endsWith("Z") ? "" : "Z"));
  assert.ok(start >= started - 5 && start <= Date.now(), `start ${root.start_time}`);
  assert.ok(end >= start, `end ${root.end_time} before start ${root.start_time}`);

  // Filters and tree queries through the SDK.
  const roots = await collect(c.listRuns({ projectName: project, isRoot: true }));
  assert.deepEqual(roots.map((r) => r.name), ["pipeline"]);
  const errors = await collect(c.listRuns({ projectName: project, error: true }));
  assert.deepEqual(errors.map((r) => r.name), ["flaky_tool"]);
  const llms = await collect(c.listRuns({ projectName: project, filter: 'eq(run_type, "llm")' }));
  assert.deepEqual(llms.map((r) => r.name), ["fake_llm"]);
  const tree = await c.readRun(root.id, { loadChildRuns: true });
  assert.deepEqual(tree.child_runs.map((r) => r.name).sort(), ["fake_llm", "flaky_tool"]);
  assert.deepEqual(warnings.filter((w) => /LANGSMITH|Failed|failed to/i.test(w) && !/deprecated/i.test(w)), []);
});

test("createRun and updateRun with Date.now() times, and a RunTree posted by hand", async () => {
  const c = client({ autoBatchTracing: false });
  const project = `js-manual-${randomUUID()}`;
  const id = randomUUID();
  const t0 = Date.now();
  await c.createRun({ id, name: "manual", run_type: "chain", inputs: { q: 1 }, start_time: t0, project_name: project });
  await c.updateRun(id, { end_time: t0 + 1500, outputs: { a: 2 } });
  const run = await eventually(async () => {
    const r = await c.readRun(id);
    return r.end_time ? r : null;
  }, 10_000, "the patched run");
  assert.deepEqual(run.outputs, { a: 2 });
  const ms = (s) => Date.parse(s.endsWith("Z") ? s : s + "Z");
  assert.equal(ms(run.start_time), t0);
  assert.equal(ms(run.end_time), t0 + 1500);

  const tree = new RunTree({ name: "tree_root", run_type: "chain", inputs: { x: 1 }, project_name: project, client: c });
  await tree.postRun();
  const child = tree.createChild({ name: "tree_child", run_type: "retriever", inputs: { q: "a" } });
  await child.postRun();
  await child.end({ documents: [] });
  await child.patchRun();
  await tree.end({ y: 2 });
  await tree.patchRun();
  const rs = await eventually(async () => {
    const all = await collect(c.listRuns({ projectName: project, traceId: tree.id }));
    return all.length === 2 && all.every((r) => r.end_time) ? all : null;
  }, 10_000, "the RunTree's two runs");
  assert.deepEqual(rs.map((r) => r.name).sort(), ["tree_child", "tree_root"]);
});

test("a time of the wrong type is a 422 naming the field", async () => {
  const r = await api(server.url, "POST", "/runs", {
    id: randomUUID(), name: "bad", run_type: "chain", inputs: {}, start_time: true,
  });
  assert.equal(r.status, 422);
  assert.match(JSON.stringify(r.json), /start_time/);
});
