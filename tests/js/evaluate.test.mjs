// evaluate() with the JS SDK: a target traced into an experiment, row and summary evaluators,
// and the experiment read back (runs, feedback, stats).
import assert from "node:assert/strict";
import { test } from "node:test";
import { randomUUID } from "node:crypto";

import { evaluate } from "langsmith/evaluation";

import { client, collect, eventually, startSextant } from "./harness.mjs";

await startSextant();

test("evaluate() stores one run per example with row feedback and a summary score", async () => {
  const c = client();
  const name = `js-eval-${randomUUID()}`;
  const ds = await c.createDataset(name);
  await c.createExamples({
    inputs: [{ q: "a" }, { q: "b" }, { q: "c" }],
    outputs: [{ a: "A" }, { a: "B" }, { a: "X" }],
    datasetId: ds.id,
  });
  const exact = ({ outputs, referenceOutputs }) => ({ key: "exact", score: outputs.a === referenceOutputs.a ? 1 : 0 });
  const share = ({ outputs, referenceOutputs }) => ({
    key: "share_exact",
    score: outputs.filter((o, i) => o.a === referenceOutputs[i].a).length / outputs.length,
  });
  const results = await evaluate(async (inputs) => ({ a: inputs.q.toUpperCase() }), {
    data: name,
    evaluators: [exact],
    summaryEvaluators: [share],
    experimentPrefix: "js-suite",
    client: c,
    maxConcurrency: 2,
  });
  const experiment = results.experimentName;
  await c.awaitPendingTraceBatches();
  const project = await eventually(async () => {
    const p = await c.readProject({ projectName: experiment, includeStats: true });
    return p.run_count === 3 ? p : null;
  }, 20_000, "the experiment's 3 root runs");
  assert.equal(project.reference_dataset_id, ds.id);
  const runs = await collect(c.listRuns({ projectName: experiment, isRoot: true }));
  assert.equal(runs.length, 3);
  assert.ok(runs.every((r) => r.reference_example_id), "every run cites its example");
  const feedback = await eventually(async () => {
    const fs = await collect(c.listFeedback({ runIds: runs.map((r) => r.id), feedbackKeys: ["exact"] }));
    return fs.length === 3 ? fs : null;
  }, 10_000, "3 exact scores");
  assert.deepEqual(feedback.map((f) => f.score).sort(), [0, 1, 1]);
  const summary = await eventually(async () => {
    const r = await fetch(`${process.env.LANGSMITH_ENDPOINT}/feedback?session=${project.id}&key=share_exact`, {
      headers: { "x-api-key": "k" },
    });
    const all = r.ok ? await r.json() : [];
    return all.length === 1 ? all[0] : null;
  }, 10_000, "the summary score on the experiment");
  assert.ok(Math.abs(summary.score - 2 / 3) < 1e-3, JSON.stringify(summary));
});
