//! `POST /runs/multipart`: Content-Encoding undoing (`decode_body`), the form-data splitter and
//! the part parser (`multipart::parse`). No input may panic; every JSON value the parser keeps
//! must be valid JSON (the rest of the server trusts `RawJson` and re-parses it with `expect`).
//!
//! Input layout: byte 0 picks the Content-Encoding (bits 0-1: none, gzip, zstd, an unsupported
//! name) and whether the Content-Type comes from the input (bit 2: then it is the text up to
//! the first `\n`); the remaining bytes are the body. Otherwise the Content-Type is the SDK's,
//! with the boundary `B` below.
#![no_main]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;
use sextant_ingest::form_data::Parts;
use sextant_ingest::multipart::{decode_body, parse};

const B: &str = "eb4651d2d7d94b3fa6445b6be97e9bf5";
/// Small limits so the fuzzer reaches them.
const MAX_DECODED: usize = 64 * 1024;
const MAX_PARTS: usize = 64;

/// `parse` is `async` but never awaits: one poll finishes it.
fn run_now<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("multipart::parse awaited something"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let encoding = match mode & 3 {
        0 => None,
        1 => Some("gzip"),
        2 => Some(" ZSTD "),
        _ => Some("br"),
    };
    let (ct, body) = if mode & 4 != 0 {
        match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (String::from_utf8_lossy(&rest[..i]).into_owned(), &rest[i + 1..]),
            None => (String::from_utf8_lossy(rest).into_owned(), &[][..]),
        }
    } else {
        (format!("multipart/form-data; boundary={B}"), rest)
    };
    let Ok(body) = decode_body(encoding, Bytes::copy_from_slice(body), MAX_DECODED) else { return };
    assert!(body.len() <= MAX_DECODED, "decode_body returned more than its limit");

    // The splitter alone: parts are slices of the body.
    if let Ok(parts) = Parts::new(&body, B) {
        for p in parts.take(MAX_PARTS + 1) {
            let Ok(p) = p else { break };
            assert!(p.data.len() <= body.len());
        }
    }

    let Ok(parsed) = run_now(parse(Some(&ct), body, MAX_PARTS)) else { return };
    for (f, _project) in &parsed.fragments {
        for json in [&f.inputs, &f.outputs, &f.events, &f.serialized].into_iter().flatten() {
            assert!(serde_json::from_str::<&RawValue>(json.as_str()).is_ok(), "the parser kept invalid JSON");
        }
    }
    for (_, fb) in &parsed.feedback {
        assert!(serde_json::from_slice::<&RawValue>(fb).is_ok(), "feedback part kept invalid JSON");
    }
});
