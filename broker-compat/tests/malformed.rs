//! A corpus of malformed envelopes and messages: each yields its typed
//! `DecodeErrorKind` (and so a defined disposition), never a panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use broker_compat::error::{DecodeErrorKind as K, Disposition};
use broker_compat::protocol::{
    decode_envelope, pyjson, Compression, DecodeOptions, Message, TaskMessage,
};
use serde_json::{json, Value};

const ID: &str = "0989edc9-3956-41ca-9773-cdfe1000dfab";
const GOOD_BODY: &str =
    r#"[[1, 2], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]"#;

fn headers() -> Value {
    json!({"lang": "py", "task": "capapp.add", "id": ID, "eta": null, "timelimit": [null, null]})
}

/// A kombu Redis envelope around `body` bytes.
fn envelope(body: &[u8], content_type: &str, headers: Value) -> Vec<u8> {
    pyjson::to_vec(&json!({
        "body": BASE64.encode(body),
        "content-encoding": "utf-8",
        "content-type": content_type,
        "headers": headers,
        "properties": {"correlation_id": ID, "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": "celery"}, "priority": 0,
            "body_encoding": "base64", "delivery_tag": "05e2b338-c8fa-4238-b28c-fc89cce33780"}
    }))
}

fn with_headers(extra: Value) -> Value {
    let mut h = headers();
    for (k, v) in extra.as_object().unwrap() {
        h[k] = v.clone();
    }
    h
}

/// Decode a raw envelope then the task, as a consumer does.
fn decode(raw: &[u8], opts: &DecodeOptions) -> Result<TaskMessage, broker_compat::DecodeError> {
    TaskMessage::decode(&decode_envelope(raw)?.message, opts)
}

fn kind(raw: &[u8]) -> K {
    decode(raw, &DecodeOptions::default())
        .map(|_| ())
        .unwrap_err()
        .kind
}

fn zlib_headers() -> Value {
    with_headers(json!({"compression": "application/x-gzip"}))
}

#[test]
fn corpus_yields_typed_errors() {
    let json = "application/json";
    let zipped = Compression::Zlib.compress(GOOD_BODY.as_bytes()).unwrap();
    let cases: Vec<(&str, Vec<u8>, K)> = vec![
        ("envelope is not JSON", b"{\"body\": ".to_vec(), K::Envelope),
        ("envelope is a list", b"[1, 2]".to_vec(), K::Envelope),
        (
            "envelope is not UTF-8",
            b"{\"body\": \"\xff\"}".to_vec(),
            K::Utf8,
        ),
        (
            "headers not a map",
            br#"{"body": "", "headers": [1]}"#.to_vec(),
            K::Envelope,
        ),
        (
            "bad base64",
            br#"{"body": "!!!", "properties": {"body_encoding": "base64"}}"#.to_vec(),
            K::Base64,
        ),
        (
            "body not JSON",
            envelope(b"[[1, 2], {", json, headers()),
            K::Body,
        ),
        (
            "body not UTF-8",
            envelope(b"[[\"\xff\"], {}, {}]", json, headers()),
            K::Utf8,
        ),
        (
            "body of 1 element",
            envelope(b"[[1, 2]]", json, headers()),
            K::BodyShape,
        ),
        (
            "body of 4 elements",
            envelope(b"[[1], {}, {}, {}]", json, headers()),
            K::BodyShape,
        ),
        (
            "kwargs not a map",
            envelope(b"[[1], [2], {}]", json, headers()),
            K::BodyShape,
        ),
        (
            "args not a list",
            envelope(b"[{}, {}, {}]", json, headers()),
            K::BodyShape,
        ),
        (
            "embed not a map",
            envelope(b"[[1], {}, 3]", json, headers()),
            K::BodyShape,
        ),
        (
            "raw body under a task header",
            envelope(b"x", "application/data", headers()),
            K::BodyShape,
        ),
        ("empty body", envelope(b"", json, headers()), K::BodyShape),
        (
            "unknown content type",
            envelope(b"x", "text/x-unknown", headers()),
            K::UnknownContentType,
        ),
        (
            "pickle",
            envelope(b"\x80\x04N.", "application/x-python-serialize", headers()),
            K::ContentDisallowed,
        ),
        (
            "missing id",
            envelope(GOOD_BODY.as_bytes(), json, json!({"task": "capapp.add"})),
            K::MissingField,
        ),
        (
            "null task",
            envelope(GOOD_BODY.as_bytes(), json, json!({"task": null, "id": ID})),
            K::MissingField,
        ),
        (
            "v1 body without id",
            envelope(br#"{"task": "capapp.add", "args": []}"#, json, json!({})),
            K::MissingField,
        ),
        (
            "bad eta",
            envelope(
                GOOD_BODY.as_bytes(),
                json,
                with_headers(json!({"eta": "not-a-date"})),
            ),
            K::Header,
        ),
        (
            "numeric eta",
            envelope(GOOD_BODY.as_bytes(), json, with_headers(json!({"eta": 5}))),
            K::Header,
        ),
        (
            "bad expires",
            envelope(
                GOOD_BODY.as_bytes(),
                json,
                with_headers(json!({"expires": "soon"})),
            ),
            K::Header,
        ),
        (
            "bad timelimit",
            envelope(
                GOOD_BODY.as_bytes(),
                json,
                with_headers(json!({"timelimit": "30"})),
            ),
            K::Header,
        ),
        (
            "unknown __type__",
            envelope(
                br#"[[{"__type__": "set", "__value__": [1]}], {}, {}]"#,
                json,
                headers(),
            ),
            K::UnknownType,
        ),
        (
            "truncated zlib",
            envelope(&zipped[..zipped.len() / 2], json, zlib_headers()),
            K::Compression,
        ),
        (
            "unknown compression",
            envelope(
                &zipped,
                json,
                with_headers(json!({"compression": "application/x-rar"})),
            ),
            K::Compression,
        ),
        (
            "not a task",
            envelope(b"\"just a string\"", json, json!({"id": ID})),
            K::NotATask,
        ),
        (
            "map without task",
            envelope(br#"{"method": "ping"}"#, json, json!({})),
            K::NotATask,
        ),
    ];
    for (name, raw, want) in cases {
        let err = decode(&raw, &DecodeOptions::default())
            .map(|_| ())
            .unwrap_err();
        assert_eq!(err.kind, want, "{name}: {err}");
        // Nothing is ever left unacknowledged: every kind has a disposition.
        assert!(matches!(
            err.kind.disposition(),
            Disposition::Ack | Disposition::Reject
        ));
        if decode_envelope(&raw).is_ok() {
            assert_eq!(
                err.task_id.as_deref(),
                Some(ID),
                "{name}: error names the task"
            );
        }
    }
}

#[test]
fn pickle_is_refused_with_a_clear_message() {
    let raw = envelope(b"\x80\x04N.", "application/x-python-serialize", headers());
    let err = decode(&raw, &DecodeOptions::default())
        .map(|_| ())
        .unwrap_err();
    assert_eq!(
        (err.kind, err.kind.disposition()),
        (K::ContentDisallowed, Disposition::Reject)
    );
    assert!(
        err.to_string()
            .contains("Refusing to deserialize untrusted content of type pickle"),
        "{err}"
    );
    assert_eq!(err.task_name.as_deref(), Some("capapp.add"));
    assert_eq!(
        err.content_type.as_deref(),
        Some("application/x-python-serialize")
    );
}

#[test]
fn oversized_bodies_and_decompression_bombs() {
    let small = DecodeOptions {
        max_body_size: Some(16),
        ..DecodeOptions::default()
    };
    let raw = envelope(GOOD_BODY.as_bytes(), "application/json", headers());
    assert_eq!(
        decode(&raw, &small).map(|_| ()).unwrap_err().kind,
        K::Oversized
    );

    // 16 MiB of zeros compress to a few KiB: the limit applies to the output.
    let bomb = format!("[[\"{}\"], {{}}, {{}}]", "0".repeat(16 << 20));
    let zipped = Compression::Zlib.compress(bomb.as_bytes()).unwrap();
    assert!(zipped.len() < 64 << 10);
    let raw = envelope(&zipped, "application/json", zlib_headers());
    let limited = DecodeOptions {
        max_body_size: Some(1 << 20),
        ..DecodeOptions::default()
    };
    assert_eq!(
        decode(&raw, &limited).map(|_| ()).unwrap_err().kind,
        K::Oversized
    );
}

#[test]
fn two_element_body_and_null_embed_are_valid() {
    for body in [&b"[[1, 2], {}]"[..], b"[[1, 2], {}, null]"] {
        let tm = decode(
            &envelope(body, "application/json", headers()),
            &DecodeOptions::default(),
        )
        .unwrap();
        assert_eq!(tm.args, vec![json!(1), json!(2)]);
        assert_eq!(tm.embed, Default::default());
    }
}

/// Every prefix and many corruptions of a real envelope decode or fail
/// cleanly (a cheap, deterministic stand-in for the fuzzer).
#[test]
fn truncations_and_corruptions_never_panic() {
    let raw = envelope(GOOD_BODY.as_bytes(), "application/json", headers());
    assert!(decode(&raw, &DecodeOptions::default()).is_ok());
    for n in 0..raw.len() {
        let _ = decode(&raw[..n], &DecodeOptions::default());
    }
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    for _ in 0..20_000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut bytes = raw.clone();
        let at = (seed % bytes.len() as u64) as usize;
        bytes[at] = (seed >> 32) as u8;
        let _ = decode(&bytes, &DecodeOptions::default());
    }
    // Corrupt the decoded body too (the base64 layer hides most flips above).
    let mut msg: Message = decode_envelope(&raw).unwrap().message;
    for i in 0..msg.body.len() {
        for b in [b'[', b']', b'{', b'"', 0xff, b'0'] {
            let saved = msg.body[i];
            msg.body[i] = b;
            let _ = TaskMessage::decode(&msg, &DecodeOptions::default());
            msg.body[i] = saved;
        }
    }
    assert_eq!(kind(b""), K::Envelope);
}
