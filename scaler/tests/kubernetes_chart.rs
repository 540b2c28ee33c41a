//! The Helm chart and the plain manifests: rendered and checked by
//! `deploy/helm/celeriac/ci/render_check.py` (helm itself has no Debian
//! package), and every scaler command line they produce is accepted by the
//! real CLI parser and configuration.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use celeriac_scaler::config::{Cli, Config, TargetKind};
use clap::Parser;

fn check_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/helm/celeriac/ci/render_check.py")
}

fn python(args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg(check_script())
        .args(args)
        .output()
        .expect("python3 (with PyYAML) is needed to render the chart");
    assert!(
        out.status.success(),
        "render_check.py failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_chart_renders_with_least_privilege() {
    let report = python(&[]);
    assert_eq!(report.lines().count(), 4, "{report}");
}

#[test]
fn every_rendered_scaler_command_line_is_valid() {
    let variants: BTreeMap<String, Vec<String>> =
        serde_json::from_str(&python(&["--scaler-args"])).unwrap();
    assert_eq!(variants.len(), 4);
    let env = |k: &str| {
        (k == "CELERIAC_SCALER_METASTORE_URL" || k == "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN")
            .then(|| "postgresql://airflow@db/airflow".to_owned())
    };
    for (name, args) in variants {
        let argv = std::iter::once("celeriac-scaler".to_owned()).chain(args);
        let cli = Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{name}: {e}"));
        // The metastore URL arrives from a secret as an env variable in the pod.
        let cli = Cli {
            metastore_url: env("CELERIAC_SCALER_METASTORE_URL"),
            ..cli
        };
        let config = Config::resolve(cli, &env).unwrap_or_else(|e| panic!("{name}: {e}"));
        match name.as_str() {
            // KEDA mode keeps deletion costs through the same Kubernetes target.
            "keda" => assert!(config.keda_grpc_addr.is_some() && config.kubernetes.is_some()),
            _ => {
                assert_eq!(config.target, TargetKind::Kubernetes, "{name}");
                let k = config.kubernetes.unwrap();
                assert_eq!(k.spec.namespace, "airflow", "{name}");
                assert!(k.spec.safe_scale_in, "{name}");
            }
        }
    }
}
