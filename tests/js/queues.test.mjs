// Annotation queues with the JS SDK: create, add runs (run keys and the older id strings),
// size, read items back.
import assert from "node:assert/strict";
import { test } from "node:test";
import { randomUUID } from "node:crypto";

import { traceable, getCurrentRunTree } from "langsmith/traceable";

import { client, collect, eventually, startSextant } from "./harness.mjs";

await startSextant();

test("runs added to a queue by key and by id are counted and read back", async () => {
  const c = client();
  const project = `js-queue-${randomUUID()}`;
  const trees = [];
  const fn = traceable(async (i) => {
    trees.push(getCurrentRunTree());
    return { i };
  }, { name: "to_review", client: c, project_name: project });
  await fn(1);
  await fn(2);
  await c.awaitPendingTraceBatches();
  for (const t of trees) await eventually(() => c.readRun(t.id), 10_000, "the traced run");
  const queue = await c.createAnnotationQueue({ name: `js-q-${randomUUID()}`, description: "review" });
  const proj = await c.readProject({ projectName: project });
  await c.addRunsToAnnotationQueue(queue.id, [{ runId: trees[0].id, sessionId: proj.id, startTime: trees[0].start_time }]);
  await c.addRunsToAnnotationQueue(queue.id, [trees[1].id]);
  const size = await eventually(async () => {
    const s = await c.getSizeFromAnnotationQueue(queue.id);
    return s.size === 2 ? s : null;
  }, 10_000, "queue size 2");
  assert.equal(size.size, 2);
  const item = await c.getRunFromAnnotationQueue(queue.id, 0);
  assert.ok([trees[0].id, trees[1].id].includes(item.id), JSON.stringify(item));
  const all = await collect(c.listRunsFromAnnotationQueue(queue.id));
  assert.deepEqual(all.map((r) => r.id).sort(), trees.map((t) => t.id).sort());
});
