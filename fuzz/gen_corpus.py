#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/<target>/ (committed; rerun only to change them).

    .venv/bin/python fuzz/gen_corpus.py      # from the repo root, with the langsmith SDK

Multipart bodies are encoded by the langsmith SDK itself (the functions its background
thread uses), so the seeds are what the SDK sends. Each multipart seed starts with the mode
byte the `multipart` target reads (bits 0-1: Content-Encoding none/gzip/zstd/unsupported,
bit 2: a Content-Type line follows); see fuzz_targets/multipart.rs.
"""
import gzip
import hashlib
import json
import pathlib
import shutil
import uuid

import zstandard
from langsmith._internal import _operations as ops
from langsmith._internal._multipart import RewindableMultipartBody, join_multipart_parts_and_context

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"
B = "eb4651d2d7d94b3fa6445b6be97e9bf5"  # the boundary the multipart target's default Content-Type names
ROOT_ID = "01a21085-dddd-7ab9-9494-115de01cbb17"
CHILD_ID = "01a21085-dddd-7ab9-9494-115de01cbb18"
T0 = "2026-11-25T02:25:38.269290+00:00"
T1 = "2026-11-25T02:25:39.100000+00:00"
STAMP = "20261125T022538269290Z"


def write(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    (d / name).write_bytes(data)


def run(rid=ROOT_ID, parent=None, **kw):
    r = {
        "id": uuid.UUID(rid),
        "trace_id": uuid.UUID(ROOT_ID),
        "dotted_order": f"{STAMP}{ROOT_ID}" + (f".{STAMP}{rid}" if parent else ""),
        "parent_run_id": uuid.UUID(parent) if parent else None,
        "name": "parent" if not parent else "search_tool",
        "run_type": "chain" if not parent else "tool",
        "start_time": T0,
        "session_name": "fuzz-project",
        "tags": ["prod"],
        "inputs": {"question": "what is 21*2?"},
        "extra": {"metadata": {"user_id": "u1", "ls_run_depth": 0}, "runtime": {"sdk": "langsmith-py", "sdk_version": "0.15.1"}},
        "events": [{"name": "start", "time": T0}],
        "serialized": {"name": "parent", "signature": "(question)"},
    }
    r.update(kw)
    return r


def sdk_parts(operation, payload, attachments=None):
    payload = dict(payload)
    if attachments:
        payload["attachments"] = attachments
    op = ops.serialize_run_dict(operation, payload)
    parts, _files = ops.serialized_run_operation_to_multipart_parts_and_context(op)
    return parts


def sdk_body(parts_list):
    """The uncompressed body (`requests_toolbelt.MultipartEncoder`, as the SDK sends it)."""
    joined = join_multipart_parts_and_context(parts_list)
    return RewindableMultipartBody(joined.parts, B).to_bytes()


def sdk_compressed_body(parts_list):
    """The body the SDK's compressed path writes (parts, then the closing delimiter)."""
    out = b""
    for p in parts_list:
        for headers, data in ops.encode_multipart_parts_and_context(p, B):
            out += headers + (data if isinstance(data, bytes) else data.read()) + b"\r\n"
    return out + f"--{B}--\r\n".encode()


def feedback_parts():
    fb = ops.serialize_feedback_dict(
        {"id": "6f1c3e1a-2b1d-4c4b-9a51-3a8d2f6b9c11", "run_id": ROOT_ID, "trace_id": ROOT_ID, "key": "user_rating", "score": 0.9,
         "comment": "good", "feedback_source": {"type": "api"}}
    )
    return ops.serialized_feedback_operation_to_multipart_parts_and_context(fb)


def part(name, body, ct="application/json", extra_headers="", length=None):
    if isinstance(body, str):
        body = body.encode()
    n = len(body) if length is None else length
    head = f'--{B}\r\nContent-Disposition: form-data; name="{name}"\r\nContent-Type: {ct}\r\nContent-Length: {n}\r\n{extra_headers}\r\n'
    return head.encode() + body + b"\r\n"


def close(*parts):
    return b"".join(parts) + f"--{B}--\r\n".encode()


def multipart():
    post = sdk_parts("post", run())
    child = sdk_parts("post", run(CHILD_ID, parent=ROOT_ID, inputs={"query": "21*2"}))
    patch = sdk_parts("patch", {"id": uuid.UUID(ROOT_ID), "trace_id": uuid.UUID(ROOT_ID), "dotted_order": f"{STAMP}{ROOT_ID}",
                                "end_time": T1, "outputs": {"answer": 42}})
    patch_err = sdk_parts("patch", {"id": uuid.UUID(CHILD_ID), "trace_id": uuid.UUID(ROOT_ID), "parent_run_id": uuid.UUID(ROOT_ID),
                                    "dotted_order": f"{STAMP}{ROOT_ID}.{STAMP}{CHILD_ID}", "end_time": T1,
                                    "error": "ValueError('boom')\nTraceback ..."})
    llm = sdk_parts("post", run(CHILD_ID, parent=ROOT_ID, run_type="llm", name="ChatOpenAI", end_time=T1,
                                outputs={"generations": [{"text": "42"}], "usage_metadata": {"input_tokens": 10, "output_tokens": 2, "total_tokens": 12}}))
    att = sdk_parts("post", run(), attachments={"image": ("image/png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"), "notes": ("text/plain", b"hello")})
    bodies = {
        "sdk-post": [post],
        "sdk-post-child": [post, child],
        "sdk-post-patch": [post, patch],
        "sdk-trace": [post, child, patch_err, patch],
        "sdk-llm-usage": [llm],
        "sdk-attachments": [att],
        "sdk-feedback": [feedback_parts()],
        "sdk-post-feedback": [post, feedback_parts()],
    }
    for name, parts in bodies.items():
        plain = sdk_body(parts)
        write("multipart", name, b"\x00" + plain)
        comp = sdk_compressed_body(parts)
        write("multipart", name + ".zstd", b"\x02" + zstandard.ZstdCompressor(level=3).compress(comp))
    write("multipart", "sdk-trace.gzip", b"\x01" + gzip.compress(sdk_compressed_body(bodies["sdk-trace"]), mtime=0))
    write("multipart", "unsupported-encoding", b"\x03" + sdk_body([post]))
    write("multipart", "zstd-not-zstd", b"\x02" + sdk_body([post]))
    write("multipart", "gzip-truncated", b"\x01" + gzip.compress(sdk_body([post]), mtime=0)[:40])

    # Hand-written shapes (from services/ingest/src/multipart.rs and form_data.rs tests).
    pid = ROOT_ID
    write("multipart", "any-order", b"\x00" + close(
        part(f"post.{pid}.inputs", '{"q":1}'),
        part(f"post.{pid}", json.dumps({"id": pid, "name": "parent", "session_name": "p1"})),
        part(f"post.{pid}.error", '"ValueError(\'boom\')"'),
        part(f"patch.{pid}", json.dumps({"id": pid, "end_time": "2026-11-25T02:25:39+00:00"})),
        part(f"patch.{pid}.outputs", '{"y":2}'),
        part(f"attachment.{pid}.image", "PNG", ct="image/png"),
    ))
    write("multipart", "length-lie", b"\x00" + close(part(f"post.{pid}", "{}", length=10)))
    write("multipart", "bad-json", b"\x00" + close(part(f"post.{pid}.inputs", "{nope")))
    write("multipart", "bad-uuid", b"\x00" + close(part("post.not-a-uuid", "{}")))
    write("multipart", "id-mismatch", b"\x00" + close(part(f"post.{pid}", '{"id":"01a21085-dddd-7ab9-9494-000000000000"}')))
    write("multipart", "unknown-kind", b"\x00" + close(part(f"delete.{pid}", "{}")))
    write("multipart", "unknown-field", b"\x00" + close(part(f"post.{pid}.metadata", "{}")))
    write("multipart", "part-encoding", b"\x00" + close(part(f"post.{pid}.inputs", "{}", extra_headers="Content-Encoding: gzip\r\n")))
    write("multipart", "wrong-ct", b"\x00" + close(part(f"post.{pid}", "{}", ct="text/plain")))
    write("multipart", "nulls", b"\x00" + close(
        part(f"post.{pid}", json.dumps({"id": pid, "inputs": None, "extra": None})),
        part(f"post.{pid}.outputs", "null"), part(f"post.{pid}.extra", "null"), part(f"post.{pid}.error", '{"type":"E","n":1}'),
    ))
    write("multipart", "extra-not-object", b"\x00" + close(part(f"post.{pid}.extra", "[1]")))
    write("multipart", "deep-inputs", b"\x00" + close(part(f"post.{pid}.inputs", "[" * 130 + "]" * 130)))
    write("multipart", "close-only", b"\x00" + f"--{B}--\r\n".encode())
    write("multipart", "empty", b"\x00")
    ct = b"multipart/form-data; boundary=XyZ\n"
    write("multipart", "ct-preamble-epilogue", b"\x04" + ct +
          b"preamble\r\n--XyZ  \r\nContent-Disposition: form-data; name=\"post.1\"\r\nContent-Type: Application/JSON; charset=utf-8\r\n\r\n"
          b"{\"a\":\"--XyZ\"}\r\n--XyZ\r\ncontent-disposition: form-data; filename=\"f;x.png\"; name=att\r\n\r\n\r\n--XyZ--\r\nepilogue")
    write("multipart", "ct-escaped-name", b"\x04" + ct +
          b"--XyZ\r\nContent-Disposition: form-data; name=\"a\\\"b\"\r\nContent-Length: 2\r\n\r\nhi\r\n--XyZ--")
    write("multipart", "ct-quoted-boundary", b"\x04" + b'multipart/form-data; charset=utf-8; boundary="a b:c"\n' +
          f"--a b:c\r\nContent-Disposition: form-data; name=\"post.{pid}\"\r\n\r\n{{\"id\":\"{pid}\"}}\r\n--a b:c--\r\n".encode())
    write("multipart", "ct-not-multipart", b"\x04application/json\n{}")
    write("multipart", "ct-many-headers", b"\x04" + ct + b"--XyZ\r\n" + b"X-A: b\r\n" * 33 + b"\r\nx\r\n--XyZ--")


def filters():
    u = lambda n: str(uuid.UUID(int=n))
    exprs = [
        'and(eq(feedback_key, "user_rating"), lt(feedback_score, 0.4))',
        "and(eq(run_type, 'llm'), gt(latency, '1.5s'), has(tags, 'prod'))",
        "or(eq(run_type, 'tool'), eq(run_type, 'chain'))",
        "and(gte(start_time, '2026-11-25'), lte(start_time, '2026-11-26'))",
        "eq(start_time, '2026-11-25T02:00:00')",
        "gt(start_time, '2026-11-25T03:25:38.269290+01:00')",
        "and(eq(is_root, false), eq(name, 'search_tool'))",
        "eq(execution_order, 2)",
        "neq(parent_run_id, null)",
        "and(eq(metadata_key, 'user'), neq(metadata_value, 'u2'))",
        "and(eq(metadata_key, 'user'), eq(metadata_value, 'u1'))",
        "and(has(tags, 'prod'), and(eq(metadata_key, 'user'), eq(metadata_value, 'u1')))",
        "and(neq(metadata_key, 'k'))",
        "in(metadata_key, ['session_id', 'conversation_id', 'thread_id'])",
        "has(metadata, '{\"foo\":\"bar\"}')",
        "exists(metadata, 'user')",
        "search('paris')",
        "search(inputs, 'france')",
        "not(or(has(tags, 'dev'), eq(error, true)))",
        "in(run_type, ['llm', 'tool'])",
        "or(and(has(tags, 'prod'), gt(start_time, '2026-01-01')), has(tags, 'dev'))",
        "and(in(tags, ['prod', 'dev']), lt(total_cost, 1e-2), gte(total_tokens, -5))",
        "and(eq(input_key, 'n'), or(eq(input_value, 3), eq(input_value, '4')))",
        "eq(status, 'success')",
        'lt(first_token_time, "200ms")',
        "search(error, 'it\\'s \"quoted\"\\n\\u00e9')",
        f"and(eq(trace_id, '{u(1)}'), in(id, ['{u(1)}', '{u(2)}']))",
        f"and(eq(session_id, '{u(0xAAAA)}'), eq(parent_run_id, '{u(1)}'))",
        f'eq(reference_example_id, "{u(0xE1).upper()}")',
        "in(parent_run_id, [null])",
        "AND( eq(latency,'1.5s') , Has(tags , 'a'),eq(error,TRUE),eq(feedback_score, true))",
        'or(search("refund"), eq(error, true))',
        'and(eq(metadata_key, "prompt_variant"), eq(metadata_value, "canary"))',
        'eq(run_type, "chain")',
        'and(eq(run_type,"llm"), gt(latency,1))',
        "eq(is_root, true)",
        "neq(error, null)",
        "and(eq(output_key, 'answer'), eq(output_value, 'Paris'))",
        "and(eq(feedback_key, 'user'), eq(feedback_value, 'u1'), eq(feedback_source, 'model'))",
        "gte(total_tokens, 12)",
        "eq(name, None)",
        "eq(name, '\\u00e9\\ud83d\\ude00')",
        "eq(total_tokens, 99999999999999999999)",
        "eq(total_tokens, 1e309)",
        "and(eq(metadata_key, 'n'), eq(metadata_value, '42'))",
        "lt(end_time, '2026-11-25 02:00:03')",
        "gt(first_token_time, '0.1s')",
        "not(not(not(eq(status, 'pending'))))",
    ]
    for i, e in enumerate(exprs):
        write("filter", f"expr-{i:02}", e)


def wire_runs():
    def dumps(obj):
        return json.dumps(obj, default=str)
    pid, cid = ROOT_ID, CHILD_ID
    sdk_post = (b'{"id":"01a21085-dddd-7ab9-9494-115de01cbb17","start_time":"2026-11-25T02:25:38.269290+00:00",'
                b'"tags":["parent-tag"],"dotted_order":"20261125T022538269290Z01a21085-dddd-7ab9-9494-115de01cbb17",'
                b'"trace_id":"01a21085-dddd-7ab9-9494-115de01cbb17","session_name":"rec","name":"parent","run_type":"chain",'
                b'"inputs":{"question":"what is 21*2?"},"outputs":null,"unknown_key":[1,2,3]}')
    write("wire_run", "sdk-post", sdk_post)
    full_root = run()
    full_child = run(cid, parent=pid, run_type="llm", end_time=T1,
                     outputs={"generations": [{"text": "42"}], "usage_metadata": {"input_tokens": 10, "output_tokens": 2}})
    patch = {"id": pid, "trace_id": pid, "dotted_order": f"{STAMP}{pid}", "end_time": T1, "outputs": {"answer": 42}}
    write("wire_run", "run-root", dumps(full_root))
    write("wire_run", "run-child-llm", dumps(full_child))
    write("wire_run", "run-patch", dumps(patch))
    write("wire_run", "batch-trace", dumps({"post": [full_root, full_child], "patch": [patch]}))
    write("wire_run", "batch-post-only", dumps({"post": [full_root]}))
    write("wire_run", "batch-patch-only", dumps({"patch": [patch, {"id": cid, "error": "boom", "end_time": T1}]}))
    write("wire_run", "batch-empty", '{"post":[],"patch":null}')
    write("wire_run", "batch-usage-metadata", dumps({"post": [{
        "id": pid, "start_time": T0, "run_type": "chain",
        "extra": {"metadata": {"usage_metadata": {"input_tokens": 5, "output_tokens": 7, "total_tokens": 12, "input_cost": 0.1, "output_cost": 0.2}}}}]}))
    write("wire_run", "run-tokens-costs", dumps({"id": pid, "prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12,
                                                 "prompt_cost": 0.001, "completion_cost": 0.002, "total_cost": 0.003, "status": "success"}))
    write("wire_run", "run-session-id", dumps({"id": pid, "session_id": "6f1c3e1a-2b1d-4c4b-9a51-3a8d2f6b9c11", "session_name": "x",
                                               "reference_example_id": "6f1c3e1a-2b1d-4c4b-9a51-3a8d2f6b9c12"}))
    write("wire_run", "run-child-no-dotted", dumps({"id": cid, "parent_run_id": pid, "start_time": "2026-11-25 02:25:38", "name": "c"}))
    write("wire_run", "run-times", dumps({"id": pid, "start_time": "2026-11-25T02:25:38Z", "end_time": "2026-11-25T02:25:38.5+0100",
                                          "first_token_time": "2026-11-25"}))
    write("wire_run", "bad-tags", '{"id":"x","tags":"notalist"}')
    write("wire_run", "bad-id", '{"id":"not-a-uuid"}')
    write("wire_run", "bad-time", '{"id":"01a21085-dddd-7ab9-9494-115de01cbb17","start_time":"yesterday"}')
    write("wire_run", "no-id", "{}")
    write("wire_run", "not-json", "{not json")
    write("wire_run", "bad-dotted", dumps({"id": pid, "dotted_order": "20261125T022538269290Z00000000-0000-0000-0000-000000000001"}))
    write("wire_run", "deep-inputs", '{"id":"01a21085-dddd-7ab9-9494-115de01cbb17","inputs":' + "[" * 130 + "]" * 130 + "}")
    write("wire_run", "nulls", dumps({k: None for k in ["id", "trace_id", "name", "inputs", "outputs", "events", "extra", "tags", "end_time"]}))
    write("wire_run", "unicode", dumps({"id": pid, "name": "caf\u00e9 \ud83d\ude00", "error": "\u0000", "tags": ["\u202e"]}))


def events():
    src = ROOT / "libs" / "events" / "fixtures"
    d = CORPUS / "events"
    d.mkdir(parents=True, exist_ok=True)
    for f in sorted(src.glob("*.msgpack")):
        shutil.copy(f, d / f.name)
    # Garbage from libs/events' own tests: decode errors, not panics.
    for i, bad in enumerate([b"", b"\xc1", b"\x81\xa2id\xc0", b"\xff" * 64]):
        write("events", f"garbage-{i}", bad)


if __name__ == "__main__":
    for t in ["multipart", "filter", "wire_run", "events"]:
        shutil.rmtree(CORPUS / t, ignore_errors=True)
    multipart()
    filters()
    wire_runs()
    events()
    for t in sorted(p.name for p in CORPUS.iterdir()):
        files = list((CORPUS / t).iterdir())
        print(f"{t}: {len(files)} seeds, {sum(f.stat().st_size for f in files)} bytes")
