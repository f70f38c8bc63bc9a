// Datasets with the JS SDK: examples, versions (by time, by tag and the built-in "latest"),
// diffs, splits, and listing examples as of a version.
import assert from "node:assert/strict";
import { test } from "node:test";
import { randomUUID } from "node:crypto";

import { client, collect, startSextant } from "./harness.mjs";

await startSextant();

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

test("versions, tags, latest, diff and splits read back through the SDK", async () => {
  const c = client();
  const ds = await c.createDataset(`js-ds-${randomUUID()}`, { description: "js suite" });
  const first = await c.createExamples({
    inputs: [{ q: "1+1" }, { q: "2+2" }],
    outputs: [{ a: "2" }, { a: "4" }],
    datasetId: ds.id,
  });
  assert.equal(first.length, 2);
  const v1 = await c.readDatasetVersion({ datasetId: ds.id, tag: "latest" });
  assert.ok(v1.as_of, JSON.stringify(v1));
  await c.updateDatasetTag({ datasetId: ds.id, asOf: v1.as_of, tag: "v1" });

  await sleep(20);
  await c.updateExample(first[0].id, { outputs: { a: "two" } });
  const added = await c.createExamples({ inputs: [{ q: "3+3" }], outputs: [{ a: "6" }], datasetId: ds.id });

  const atV1 = await collect(c.listExamples({ datasetId: ds.id, asOf: "v1" }));
  assert.equal(atV1.length, 2);
  assert.deepEqual(atV1.find((e) => e.id === first[0].id).outputs, { a: "2" });
  const atLatest = await collect(c.listExamples({ datasetId: ds.id, asOf: "latest" }));
  assert.equal(atLatest.length, 3);
  assert.deepEqual(atLatest.find((e) => e.id === first[0].id).outputs, { a: "two" });

  const diff = await c.diffDatasetVersions({ datasetId: ds.id, fromVersion: "v1", toVersion: "latest" });
  assert.deepEqual(diff.examples_added, [added[0].id]);
  assert.deepEqual(diff.examples_modified, [first[0].id]);
  assert.deepEqual(diff.examples_removed, []);

  const tagged = await c.readDatasetVersion({ datasetId: ds.id, tag: "v1" });
  assert.equal(Date.parse(tagged.as_of), Date.parse(v1.as_of));

  await c.updateDatasetSplits({ datasetId: ds.id, splitName: "test", exampleIds: [first[1].id, added[0].id] });
  const splits = await c.listDatasetSplits({ datasetId: ds.id });
  assert.ok(splits.includes("test"), JSON.stringify(splits));
  const inTest = await collect(c.listExamples({ datasetId: ds.id, splits: ["test"] }));
  assert.deepEqual(inTest.map((e) => e.id).sort(), [first[1].id, added[0].id].sort());
});
