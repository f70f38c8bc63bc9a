// The prompt hub with the JS SDK: pushPrompt (create + commits, with a trailing-slash POST
// /repos/), pull by name, by commit hash and by tag, and listing.
import assert from "node:assert/strict";
import { test } from "node:test";
import { randomUUID } from "node:crypto";

import { client, collect, startSextant } from "./harness.mjs";

await startSextant();

const manifest = (template) => ({
  lc: 1,
  type: "constructor",
  id: ["langchain", "prompts", "prompt", "PromptTemplate"],
  kwargs: { template, input_variables: ["name"], template_format: "f-string" },
});

test("pushPrompt creates the prompt and commits; pulls by latest, hash and tag return each version", async () => {
  const c = client();
  const name = `js-prompt-${randomUUID().slice(0, 8)}`;
  const url1 = await c.pushPrompt(name, { object: manifest("Hello {name}"), description: "greeting" });
  assert.ok(typeof url1 === "string" && url1.length > 0);
  const first = await c.pullPromptCommit(name, { skipCache: true });
  assert.equal(first.manifest.kwargs.template, "Hello {name}");
  await c.pushPrompt(name, { object: manifest("Hi there {name}"), commitTags: ["production"] });
  const latest = await c.pullPromptCommit(name, { skipCache: true });
  assert.equal(latest.manifest.kwargs.template, "Hi there {name}");
  assert.notEqual(latest.commit_hash, first.commit_hash);
  const byHash = await c.pullPromptCommit(`${name}:${first.commit_hash}`, { skipCache: true });
  assert.equal(byHash.manifest.kwargs.template, "Hello {name}");
  const byShortHash = await c.pullPromptCommit(`${name}:${first.commit_hash.slice(0, 8)}`, { skipCache: true });
  assert.equal(byShortHash.commit_hash, first.commit_hash);
  const byTag = await c.pullPromptCommit(`${name}:production`, { skipCache: true });
  assert.equal(byTag.commit_hash, latest.commit_hash);
  const prompt = await c.getPrompt(name);
  assert.equal(prompt.description, "greeting");
  assert.equal(prompt.num_commits, 2);
  const listed = await collect(c.listPrompts({ query: name }));
  assert.deepEqual(listed.map((p) => p.repo_handle), [name]);
});

test("langchain/hub push and pull a ChatPromptTemplate, by latest, commit hash and tag", async () => {
  const { ChatPromptTemplate } = await import("@langchain/core/prompts");
  const hub = await import("langchain/hub");
  const name = `js-hub-${randomUUID().slice(0, 8)}`;
  const first = ChatPromptTemplate.fromMessages([["system", "You are {persona}."], ["human", "{question}"]]);
  const url = await hub.push(name, first, { description: "from langchain/hub" });
  assert.ok(url.includes(name), url);
  const pulled = await hub.pull(name);
  const msgs = await pulled.formatMessages({ persona: "terse", question: "why?" });
  assert.deepEqual(msgs.map((m) => m.content), ["You are terse.", "why?"]);

  const c = client();
  const v1 = await c.pullPromptCommit(name, { skipCache: true });
  const second = ChatPromptTemplate.fromMessages([["system", "You are {persona}!"], ["human", "{question}"]]);
  // langchain/hub's push takes no commit tags: tag this version through the client.
  await c.pushPrompt(name, { object: second, commitTags: ["prod"] });
  // The SDK keeps a process-wide prompt cache (stale-while-revalidate): a read right after a
  // push asks past it.
  const latest = await hub.pull(name, { skipCache: true });
  assert.equal((await latest.formatMessages({ persona: "kind", question: "q" }))[0].content, "You are kind!");
  const byHash = await hub.pull(`${name}:${v1.commit_hash}`);
  assert.equal((await byHash.formatMessages({ persona: "kind", question: "q" }))[0].content, "You are kind.");
  const byTag = await hub.pull(`${name}:prod`, { skipCache: true });
  assert.equal((await byTag.formatMessages({ persona: "kind", question: "q" }))[0].content, "You are kind!");
});
