// Online evaluators through the JS SDK's generated client (`client.evaluators`, the
// `onlineEvaluators` resource): create, list (offset pages), read, update, delete and bulk delete,
// each read back; bad input is a 422 naming the field.
import assert from "node:assert/strict";
import { test } from "node:test";
import { randomUUID } from "node:crypto";

import { client, startSextant } from "./harness.mjs";

await startSextant();

async function all(page) {
  const out = [];
  for await (const e of page) out.push(e);
  return out;
}

test("client.evaluators creates, lists, reads, updates and deletes evaluators", async () => {
  const ev = client().evaluators;
  const tag = `js-${randomUUID().slice(0, 8)}`;
  const { evaluator: llm } = await ev.create({
    name: `judge ${tag}`,
    type: "llm",
    metadata: { team: tag },
    llm_evaluator: { prompt_repo_handle: "judge", variable_mapping: { answer: "output" } },
  });
  const { evaluator: code } = await ev.create({ name: `code ${tag}`, type: "code", code_evaluator: { code: "def perform_eval(run): return 1" } });
  assert.equal(llm.type, "llm");
  assert.deepEqual(llm.run_rules, []);
  assert.equal(code.code_evaluator.language, "python");

  const read = await ev.retrieve(llm.id);
  assert.deepEqual([read.name, read.metadata, read.llm_evaluator.variable_mapping], [`judge ${tag}`, { team: tag }, { answer: "output" }]);
  const listed = await all(ev.list({ name_contains: tag, limit: 1, sort_by: "name", sort_by_desc: false }));
  assert.deepEqual(listed.map((e) => e.id), [code.id, llm.id], "offset pages of one, to the end");
  assert.deepEqual((await all(ev.list({ name_contains: tag, type: "code" }))).map((e) => e.id), [code.id]);

  const { evaluator: upd } = await ev.update(llm.id, { name: `judge2 ${tag}`, llm_evaluator: { commit_hash_or_tag: "v2" } });
  assert.equal(upd.llm_evaluator.prompt_repo_handle, "judge");
  assert.equal((await ev.retrieve(llm.id)).llm_evaluator.commit_hash_or_tag, "v2");

  await ev.delete(llm.id);
  await assert.rejects(ev.retrieve(llm.id), (e) => e.status === 404);
  const res = await ev.bulkDelete({ evaluator_ids: [code.id, llm.id] });
  assert.deepEqual(res.succeeded, [code.id]);
  assert.deepEqual(res.failed.map((f) => f.id), [llm.id]);
  assert.deepEqual(await all(ev.list({ name_contains: tag })), []);

  await assert.rejects(ev.create({ name: "x", type: "llm" }), (e) => e.status === 422 && /llm_evaluator/.test(e.message));
  await assert.rejects(ev.create({ type: "code", code_evaluator: { code: "x" } }), (e) => e.status === 422 && /name/.test(e.message));
});
