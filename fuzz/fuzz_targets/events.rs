//! Event envelopes from the bus (MessagePack, `sextant_events::decode`): any bytes either
//! decode or are an error, never a panic; what decodes re-encodes, and the re-encoding decodes
//! to the same envelope and is a fixed point (encode ∘ decode is stable).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sextant_events::{decode, encode};

fuzz_target!(|data: &[u8]| {
    let Ok(e) = decode(data) else { return };
    let _ = (e.stream(), e.subject(), e.kind());
    let bytes = encode(&e).expect("a decoded envelope re-encodes");
    let again = decode(&bytes).unwrap_or_else(|err| panic!("a re-encoded envelope does not decode: {err}"));
    let bytes2 = encode(&again).expect("a decoded envelope re-encodes");
    assert_eq!(bytes, bytes2, "encode(decode(encode(e))) differs from encode(e)");
    // Byte equality above tolerates NaN (which is not equal to itself); compare values too
    // when there is none.
    if format!("{e:?}").find("NaN").is_none() {
        assert_eq!(again, e, "the envelope changed in a round trip");
    }
});
