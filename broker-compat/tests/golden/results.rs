//! Stored results (§4.2.3): every value Celery wrote parses with
//! `TaskResult::from_meta` and `to_meta` writes the same bytes back.

use broker_compat::backend::TaskResult;
use broker_compat::protocol::pyjson;
use serde_json::Value;

use super::fixtures::load;

const LABELS: [&str; 4] = ["default", "airflowlike", "db", "dbext"];

/// (where, exact stored text) for every result value in the captures.
fn stored_results() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for label in ["default", "airflowlike"] {
        let name = format!("celery/worker-{label}-results-redis.json");
        let doc = load(&name);
        for (case, entry) in doc["results"].as_object().expect("results map") {
            let raw = entry["raw"]
                .as_str()
                .unwrap_or_else(|| panic!("{name} {case}: raw"));
            out.push((format!("{name} {case}"), raw.to_owned()));
        }
        let name = format!("celery/worker-{label}-result-writes.json");
        for (i, write) in load(&name)["writes"]
            .as_array()
            .expect("writes")
            .iter()
            .enumerate()
        {
            if write["cmd"][1]
                .as_str()
                .is_some_and(|k| k.starts_with("celery-task-meta-"))
            {
                out.push((
                    format!("{name} #{i}"),
                    pyjson::to_string(&write["value_json"]),
                ));
            }
        }
    }
    for label in LABELS {
        let name = format!("celery/worker-{label}-pubsub-results.json");
        for (i, msg) in load(&name)["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .enumerate()
        {
            let data = msg["data"]
                .as_str()
                .unwrap_or_else(|| panic!("{name} #{i}: data"));
            out.push((format!("{name} #{i}"), data.to_owned()));
        }
    }
    out
}

#[test]
fn every_stored_result_round_trips_byte_for_byte() {
    let all = stored_results();
    assert!(
        all.len() > 50,
        "expected many stored results, found {}",
        all.len()
    );
    for (at, raw) in all {
        let meta: Value = serde_json::from_str(&raw).unwrap_or_else(|e| panic!("{at}: {e}"));
        let meta = meta
            .as_object()
            .unwrap_or_else(|| panic!("{at}: not a map"));
        let result =
            TaskResult::from_meta(meta).unwrap_or_else(|| panic!("{at}: from_meta refused {raw}"));
        assert_eq!(pyjson::to_string(&result.to_meta()), raw, "{at}");
    }
}
