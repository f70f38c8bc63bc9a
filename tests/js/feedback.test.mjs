// Feedback with the JS SDK: direct, batched with the trace (multipart), on a project, through
// a presigned token, and listed back.
import assert from "node:assert/strict";
import { test } from "node:test";
import { randomUUID } from "node:crypto";

import { traceable, getCurrentRunTree } from "langsmith/traceable";

import { client, collect, eventually, startSextant } from "./harness.mjs";

const server = await startSextant();

async function tracedRun(c, project) {
  let ids;
  const fn = traceable(async () => {
    const rt = getCurrentRunTree();
    ids = { runId: rt.id, traceId: rt.trace_id };
    return { ok: true };
  }, { name: "rated", client: c, project_name: project });
  await fn();
  await c.awaitPendingTraceBatches();
  await eventually(() => c.readRun(ids.runId), 10_000, "the traced run");
  return ids;
}

test("direct and batched feedback on a traced run read back with scores and stats", async () => {
  const c = client();
  const project = `js-feedback-${randomUUID()}`;
  const { runId, traceId } = await tracedRun(c, project);
  const direct = await c.createFeedback(runId, "correctness", { score: 1, comment: "right" });
  // With traceId the SDK batches the feedback into the next multipart upload.
  const batched = await c.createFeedback({ runId, traceId, key: "helpfulness", score: 0.25 });
  await c.awaitPendingTraceBatches();
  const got = await eventually(async () => {
    const fs = await collect(c.listFeedback({ runIds: [runId] }));
    return fs.length === 2 ? fs : null;
  }, 10_000, "two feedback entries");
  const byKey = Object.fromEntries(got.map((f) => [f.key, f]));
  assert.equal(byKey.correctness.id, direct.id);
  assert.equal(byKey.correctness.score, 1);
  assert.equal(byKey.correctness.comment, "right");
  assert.equal(byKey.helpfulness.id, batched.id);
  assert.equal(byKey.helpfulness.score, 0.25);
  const run = await eventually(async () => {
    const r = await c.readRun(runId);
    return r.feedback_stats?.helpfulness ? r : null;
  }, 10_000, "feedback_stats on the run");
  assert.equal(run.feedback_stats.correctness.avg, 1);
});

test("a presigned feedback token is redeemed by POSTing to its URL and listed for its run", async () => {
  const c = client();
  const project = `js-token-${randomUUID()}`;
  const { runId } = await tracedRun(c, project);
  const token = await c.createPresignedFeedbackToken(runId, "thumbs", { expiration: { hours: 1 } });
  assert.match(token.url, /[0-9a-f-]{36}$/, token.url);
  const r = await fetch(token.url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ score: 1, comment: "from the widget" }) });
  assert.ok(r.ok, `redeem: ${r.status} ${await r.text()}`);
  const fs = await eventually(async () => {
    const all = await collect(c.listFeedback({ runIds: [runId], feedbackKeys: ["thumbs"] }));
    return all.length === 1 ? all : null;
  }, 10_000, "the token's feedback");
  assert.equal(fs[0].score, 1);
  assert.equal(fs[0].comment, "from the widget");
  const tokens = await collect(c.listPresignedFeedbackTokens(runId));
  assert.deepEqual(tokens.map((t) => t.id), [token.id]);
});

test("project-level feedback (no run) is stored and listed", async () => {
  const c = client();
  const project = await c.createProject({ projectName: `js-projfb-${randomUUID()}` });
  const fb = await c.createFeedback({ projectId: project.id, key: "release_quality", score: 0.5 });
  const got = await eventually(async () => {
    const r = await fetch(`${server.url}/feedback/${fb.id}`, { headers: { "x-api-key": "k" } });
    return r.ok ? r.json() : null;
  }, 10_000, "the project feedback");
  assert.equal(got.key, "release_quality");
  assert.equal(got.score, 0.5);
  assert.equal(got.session_id, project.id);
});
