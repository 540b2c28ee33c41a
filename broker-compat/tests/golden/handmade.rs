//! `redis-malformed-handling.json` / `redis-malformed-worker-crash.json`:
//! hand-made envelopes a real Celery 5.7 worker consumed. Well-formed ones
//! decode; the others give the typed error whose disposition is what the
//! worker did (spec §7.10).

use broker_compat::error::{DecodeErrorKind, Disposition};
use broker_compat::protocol::time::parse_iso;
use broker_compat::protocol::{decode_envelope, pyjson, DecodeOptions, Embed, TaskMessage};
use serde_json::{json, Value};

use super::fixtures::load;

/// What the 5.7 worker did with each case (from its log, see the fixture):
/// Ok = ran it; Err((kind, what the worker did with the message)).
fn expected(case: &str) -> Result<(), (DecodeErrorKind, Disposition)> {
    match case {
        "v2_minimal_headers_only_task_id" | "naive_eta_past" => Ok(()),
        // "Received and deleted unknown message" → reject(requeue=False).
        "no_task_header_unknown_message" => Err((DecodeErrorKind::NotATask, Disposition::Reject)),
        // "Refusing to deserialize untrusted content of type pickle" → reject.
        "content_type_not_accepted_pickle" => {
            Err((DecodeErrorKind::ContentDisallowed, Disposition::Reject))
        }
        // "Can't decode message body" (CRITICAL) → ack.
        "invalid_json_body" => Err((DecodeErrorKind::Body, Disposition::Ack)),
        // "invalid ETA value" → InvalidTaskError → reject.
        "invalid_eta_header" => Err((DecodeErrorKind::Header, Disposition::Reject)),
        // Received, acked early, then InvalidTaskError outside the body: no result.
        "kwargs_not_mapping" => Err((DecodeErrorKind::BodyShape, Disposition::Ack)),
        other => panic!("unexpected case {other}"),
    }
}

fn decode_case(case: &Value) -> Result<TaskMessage, broker_compat::DecodeError> {
    let raw = pyjson::to_vec(&case["envelope_sent"]);
    let env = decode_envelope(&raw).expect("hand-made envelopes are valid envelopes");
    TaskMessage::decode(&env.message, &DecodeOptions::default())
}

#[test]
fn malformed_handling_cases_match_the_celery_worker() {
    let doc = load("celery/redis-malformed-handling.json");
    let mut checked = 0;
    for case in doc["cases"].as_array().expect("cases") {
        let name = case["case"].as_str().expect("case name");
        if case["envelope_sent"].is_null() {
            continue; // protocol1_from_client: sent by a real client, covered in `cases`.
        }
        let id = case["task_id"].as_str().expect("task_id");
        match (decode_case(case), expected(name)) {
            (Ok(tm), Ok(())) => {
                assert_eq!((tm.id(), tm.task()), (id, "capapp.add"), "{name}");
                assert_eq!(tm.args, vec![json!(1), json!(2)], "{name}");
                assert_eq!(case["backend_meta"]["status"], "SUCCESS", "{name}");
                if name == "naive_eta_past" {
                    assert_eq!(
                        tm.headers.eta,
                        Some(parse_iso("2020-01-01T00:00:00+00:00").unwrap())
                    );
                }
            }
            (Err(e), Err((kind, disposition))) => {
                assert_eq!(
                    (e.kind, e.kind.disposition()),
                    (kind, disposition),
                    "{name}: {e}"
                );
                assert_eq!(
                    e.task_id.as_deref(),
                    Some(id),
                    "{name}: error names the task"
                );
                assert!(
                    case["backend_meta"].is_null(),
                    "{name}: Celery stored no result"
                );
            }
            (got, want) => panic!("{name}: got {got:?}, Celery did {want:?}"),
        }
        checked += 1;
    }
    assert_eq!(checked, 7);
}

#[test]
fn two_element_body_is_accepted_with_an_empty_embed() {
    // It kills the Python 5.7 worker ("not enough values to unpack"); we run it.
    let doc = load("celery/redis-malformed-worker-crash.json");
    let case = &doc["cases"][0];
    let tm = decode_case(case).expect("a missing embed is valid for us");
    assert_eq!(tm.embed, Embed::default());
    assert_eq!(tm.args, vec![json!(1), json!(2)]);
}
