//! The fake API server answers the captured requests as kube-apiserver
//! v1.28.7 did: same status codes, `Content-Type`, and the same bodies
//! (apart from the uid/resourceVersion/timestamps of objects it created).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fake_apiserver;

use fake_apiserver::{fixture, FakeApiServer, TOKEN};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

struct Answer {
    status: u16,
    content_type: String,
    nosniff: bool,
    body: String,
}

/// Send the fixture's request (method, path, headers, body) with a valid token.
async fn replay(fake: &FakeApiServer, name: &str) -> (Value, Answer) {
    let fx = fixture(name);
    let req = &fx["request"];
    let mut builder = hyper::Request::builder()
        .method(req["method"].as_str().unwrap())
        .uri(format!("{}{}", fake.url, req["path"].as_str().unwrap()));
    for (k, v) in req["headers"].as_object().unwrap() {
        let v = if k == "Authorization" {
            format!("Bearer {TOKEN}")
        } else {
            v.as_str().unwrap().to_owned()
        };
        builder = builder.header(k.as_str(), v);
    }
    let body = req["body"].as_str().unwrap_or_default().to_owned();
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let resp = client
        .request(builder.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap();
    let header = |h: &str| {
        resp.headers()
            .get(h)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let (content_type, nosniff) = (
        header("content-type").unwrap_or_default(),
        header("x-content-type-options").is_some(),
    );
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let answer = Answer {
        status,
        content_type,
        nosniff,
        body: String::from_utf8(body.to_vec()).unwrap(),
    };
    (fx["response"].clone(), answer)
}

fn same_shape(expected: &Value, answer: &Answer) -> Value {
    assert_eq!(answer.status, expected["status"].as_u64().unwrap() as u16);
    assert_eq!(answer.content_type, "application/json");
    assert!(answer.body.ends_with('\n'), "bodies end with a newline");
    assert_eq!(answer.nosniff, answer.status == 403);
    serde_json::from_str(&answer.body).unwrap()
}

/// Drop what the fake makes up for its own objects.
fn without_identity(mut v: Value) -> Value {
    let meta = v["metadata"].as_object_mut().unwrap();
    for k in ["uid", "resourceVersion", "creationTimestamp"] {
        meta.remove(k);
    }
    v
}

async fn fake() -> FakeApiServer {
    let fake = FakeApiServer::start().await;
    fake.add_deployment("airflow", "celeriac-worker", 2);
    fake
}

#[tokio::test]
async fn scale_get_and_patches_match_the_capture() {
    let fake = fake().await;
    let (expected, answer) = replay(&fake, "scale_get_200").await;
    let got = same_shape(&expected, &answer);
    assert_eq!(
        without_identity(got),
        without_identity(expected["body_json"].clone())
    );

    let (expected, answer) = replay(&fake, "scale_patch_merge_200").await;
    let got = same_shape(&expected, &answer);
    assert_eq!(
        without_identity(got.clone()),
        without_identity(expected["body_json"].clone())
    );
    let (expected, answer) = replay(&fake, "scale_patch_strategic_200").await;
    let again = same_shape(&expected, &answer);
    let rv = |v: &Value| {
        v["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    assert!(rv(&again) > rv(&got), "every write moves resourceVersion");
    assert_eq!(again["spec"]["replicas"], 3);
}

#[tokio::test]
async fn error_statuses_match_the_capture_word_for_word() {
    let fake = fake().await;
    for name in [
        "scale_get_missing_404",
        "scale_patch_negative_422",
        "scale_put_forbidden_403",
        "deployments_list_forbidden_403",
    ] {
        let (expected, answer) = replay(&fake, name).await;
        let got = same_shape(&expected, &answer);
        assert_eq!(got, expected["body_json"], "{name}");
    }
    assert_eq!(
        fake.replicas("airflow", "celeriac-worker"),
        2,
        "a refused write changes nothing"
    );
}

#[tokio::test]
async fn pods_list_by_label_and_deletion_cost_patch_match_the_capture() {
    let fake = fake().await;
    for (name, ip) in [
        ("celeriac-worker-d5677449b-6mxjr", "10.244.0.24"),
        ("celeriac-worker-d5677449b-9cxnj", "10.244.0.23"),
        ("celeriac-worker-d5677449b-jf4rg", "10.244.0.25"),
    ] {
        fake.add_pod("airflow", name, "celeriac-worker", ip, 9808);
    }
    fake.add_pod("airflow", "someone-else", "other", "10.244.0.9", 9808);
    let (expected, answer) = replay(&fake, "pods_list_by_label_200").await;
    let got = same_shape(&expected, &answer);
    let names = |v: &Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["metadata"]["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        (got["kind"].clone(), got["apiVersion"].clone()),
        ("PodList".into(), "v1".into())
    );
    let (mut a, mut b) = (names(&got), names(&expected["body_json"]));
    a.sort();
    b.sort();
    assert_eq!(a, b);

    let (expected, answer) = replay(&fake, "pod_patch_deletion_cost_200").await;
    let got = same_shape(&expected, &answer);
    let want = &expected["body_json"];
    assert_eq!(got["kind"], want["kind"]);
    assert_eq!(
        got["metadata"]["annotations"],
        want["metadata"]["annotations"]
    );
    assert_eq!(got["metadata"]["name"], want["metadata"]["name"]);
    assert_eq!(
        fake.deletion_cost("airflow", "celeriac-worker-d5677449b-jf4rg"),
        Some(-100)
    );
}

#[tokio::test]
async fn requests_without_the_token_are_unauthorized() {
    let fake = fake().await;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let uri = format!(
        "{}/apis/apps/v1/namespaces/airflow/deployments/celeriac-worker/scale",
        fake.url
    );
    let resp = client.get(uri.parse().unwrap()).await.unwrap();
    assert_eq!(resp.status(), 401);
}
