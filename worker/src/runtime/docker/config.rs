//! The container a task runs in, from its profile: pure, no I/O.
//!
//! Task containers are unprivileged by default: nobody (65534:65534), every
//! capability dropped, no new privileges, no network, a read-only root
//! filesystem with a small `/tmp`, and memory (without swap), CPU and pid
//! limits. A profile loosens only what it names (`user`, `network`, `mounts`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};

use bollard::models::{ContainerCreateBody, HostConfig};

use crate::routing::{parse_bytes, Profile, ResultSource};
use crate::runtime::{payload, RuntimeError, RuntimeErrorKind, TaskSpec};

/// The task's user unless the profile names one: `nobody`.
pub const DEFAULT_USER: &str = "65534:65534";
/// Enough for a task and its helpers; stops fork bombs.
pub const PIDS_LIMIT: i64 = 512;
/// Scratch space for tools that insist on writing somewhere.
const TMPFS_OPTIONS: &str = "rw,nosuid,nodev,size=64m,mode=1777";

/// `celeriac-<task id>`, with anything Docker refuses in a name replaced:
/// Celery task ids are usually UUIDs but can be any string.
pub(super) fn container_name(task_id: &str) -> String {
    let clean: String = task_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("celeriac-{clean}")
}

/// The create request for one task.
pub(super) fn container_body(
    spec: &TaskSpec,
    extra_labels: &BTreeMap<String, String>,
) -> Result<ContainerCreateBody, RuntimeError> {
    let profile = &spec.profile;
    let image = profile
        .image
        .clone()
        .ok_or_else(|| invalid("the profile names no image".to_owned()))?;
    let command = payload::command(spec);
    let result_dir = result_volume(profile);
    Ok(ContainerCreateBody {
        image: Some(image),
        // Empty: the image's own CMD runs.
        cmd: (!command.is_empty()).then_some(command),
        env: Some(environment(spec)),
        labels: Some(labels(spec, extra_labels)),
        user: Some(
            profile
                .user
                .clone()
                .unwrap_or_else(|| DEFAULT_USER.to_owned()),
        ),
        working_dir: profile.workdir.clone(),
        // Arguments arrive on stdin, which closes once they were written.
        attach_stdin: Some(true),
        open_stdin: Some(true),
        stdin_once: Some(true),
        tty: Some(false),
        volumes: result_dir.as_ref().map(|d| vec![d.clone()]),
        host_config: Some(host_config(profile, result_dir.as_deref())?),
        ..Default::default()
    })
}

fn environment(spec: &TaskSpec) -> Vec<String> {
    payload::environment(spec)
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect()
}

fn labels(spec: &TaskSpec, extra: &BTreeMap<String, String>) -> HashMap<String, String> {
    let mut labels: HashMap<String, String> =
        extra.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    labels.insert("celeriac.task_id".into(), spec.task_id.clone());
    labels.insert("celeriac.task_name".into(), spec.task_name.clone());
    labels.insert("celeriac.worker".into(), spec.worker.clone());
    labels.insert("celeriac.queue".into(), spec.queue.clone());
    labels
}

fn host_config(profile: &Profile, result_dir: Option<&str>) -> Result<HostConfig, RuntimeError> {
    let memory = match &profile.memory {
        Some(m) => Some(
            parse_bytes(m)
                .ok_or_else(|| invalid(format!("memory {m:?} is not a size like 512Mi")))?,
        ),
        None => None,
    };
    let binds = profile
        .mounts
        .iter()
        .map(|m| check_bind(m))
        .collect::<Result<Vec<_>, _>>()?;
    // A result file's directory is a volume (it must outlive the container's
    // exit); a tmpfs on the same path would hide it.
    let tmpfs = (result_dir != Some("/tmp") && !mounted(profile, Path::new("/tmp")))
        .then(|| HashMap::from([("/tmp".to_owned(), TMPFS_OPTIONS.to_owned())]));
    Ok(HostConfig {
        memory,
        // The same as the memory limit: no swap, so the limit is real.
        memory_swap: memory,
        nano_cpus: profile.cpus.map(|c| (c * 1e9).round() as i64),
        pids_limit: Some(PIDS_LIMIT),
        // A tiny init as pid 1: signals reach the task (pid 1 ignores
        // SIGTERM without a handler) and zombies are reaped.
        init: Some(true),
        cap_drop: Some(vec!["ALL".to_owned()]),
        security_opt: Some(vec!["no-new-privileges".to_owned()]),
        privileged: Some(false),
        network_mode: Some(profile.network.clone().unwrap_or_else(|| "none".to_owned())),
        readonly_rootfs: Some(true),
        tmpfs,
        binds: (!binds.is_empty()).then_some(binds),
        // Removed by cleanup, only once the logs were saved.
        auto_remove: Some(false),
        ..Default::default()
    })
}

/// `host:container[:ro|rw]`, with an absolute container path.
fn check_bind(mount: &str) -> Result<String, RuntimeError> {
    let parts: Vec<&str> = mount.split(':').collect();
    let ok = match parts.as_slice() {
        [host, target] => !host.is_empty() && target.starts_with('/'),
        [host, target, mode] => {
            !host.is_empty() && target.starts_with('/') && matches!(*mode, "ro" | "rw")
        }
        _ => false,
    };
    if ok {
        Ok(mount.to_owned())
    } else {
        Err(invalid(format!(
            "mount {mount:?} is not host:/container[:ro]"
        )))
    }
}

/// The directory of an absolute result file, unless a profile mount already
/// holds it (then the file outlives the container anyway).
fn result_volume(profile: &Profile) -> Option<String> {
    let ResultSource::File(path) = &profile.result else {
        return None;
    };
    let full = match &profile.workdir {
        Some(dir) if path.is_relative() => Path::new(dir).join(path),
        _ => path.clone(),
    };
    let dir = normalize(full.parent()?);
    if !dir.is_absolute() || dir == Path::new("/") || mounted(profile, &dir) {
        return None;
    }
    Some(dir.to_string_lossy().into_owned())
}

/// Whether a bind mount holds `dir` (is it or one of its parents).
fn mounted(profile: &Profile, dir: &Path) -> bool {
    profile
        .mounts
        .iter()
        .filter_map(|m| m.split(':').nth(1))
        .any(|target| dir.starts_with(normalize(Path::new(target))))
}

fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// A profile Docker cannot run: retrying will not help, so the task fails.
fn invalid(detail: String) -> RuntimeError {
    RuntimeError::new(RuntimeErrorKind::NotFound, detail)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::routing::Routing;

    fn spec(extra: &str) -> TaskSpec {
        let text = format!("[profile.t]\nruntime = \"docker\"\nimage = \"img:1\"\n{extra}");
        let routing = Routing::parse(&text).unwrap();
        TaskSpec {
            task_id: "id/1".into(),
            task_name: "jobs.add".into(),
            queue: "q".into(),
            worker: "w@h".into(),
            args: vec![serde_json::json!(1)],
            kwargs: serde_json::Map::new(),
            retries: 0,
            profile: routing.profile["t"].clone(),
        }
    }

    #[test]
    fn defaults_are_locked_down() {
        let body = container_body(&spec(""), &BTreeMap::new()).unwrap();
        let host = body.host_config.unwrap();
        assert_eq!(body.user.as_deref(), Some(DEFAULT_USER));
        assert_eq!(body.cmd, None);
        assert_eq!(host.network_mode.as_deref(), Some("none"));
        assert_eq!(host.cap_drop, Some(vec!["ALL".to_owned()]));
        assert_eq!(host.readonly_rootfs, Some(true));
        assert_eq!(host.privileged, Some(false));
        assert_eq!(host.auto_remove, Some(false));
        assert!(host.tmpfs.unwrap().contains_key("/tmp"));
        assert_eq!(body.labels.unwrap()["celeriac.task_id"], "id/1");
        assert!(body
            .env
            .unwrap()
            .contains(&r#"CELERIAC_TASK_ARGS={"args":[1],"kwargs":{}}"#.to_owned()));
    }

    #[test]
    fn limits_and_overrides() {
        let extra = "memory = \"8Mi\"\ncpus = 0.5\nuser = \"1000\"\nnetwork = \"bridge\"\nmounts = [\"/data:/data:ro\"]\ncommand = [\"run\", \"{task}\"]";
        let body = container_body(&spec(extra), &BTreeMap::new()).unwrap();
        let host = body.host_config.unwrap();
        assert_eq!(host.memory, Some(8 * 1024 * 1024));
        assert_eq!(host.memory_swap, host.memory);
        assert_eq!(host.nano_cpus, Some(500_000_000));
        assert_eq!(body.user.as_deref(), Some("1000"));
        assert_eq!(host.network_mode.as_deref(), Some("bridge"));
        assert_eq!(host.binds, Some(vec!["/data:/data:ro".to_owned()]));
        assert_eq!(
            body.cmd,
            Some(vec!["run".to_owned(), "jobs.add".to_owned()])
        );
    }

    #[test]
    fn result_files_live_on_a_volume() {
        let body = container_body(
            &spec("result = { file = \"/out/r.json\" }"),
            &BTreeMap::new(),
        )
        .unwrap();
        assert_eq!(body.volumes, Some(vec!["/out".to_owned()]));
        let body = container_body(
            &spec("result = { file = \"/tmp/r.json\" }"),
            &BTreeMap::new(),
        )
        .unwrap();
        assert_eq!(body.volumes, Some(vec!["/tmp".to_owned()]));
        assert_eq!(body.host_config.unwrap().tmpfs, None);
        let mounted = "result = { file = \"/data/out/r.json\" }\nmounts = [\"/srv:/data\"]";
        assert_eq!(
            container_body(&spec(mounted), &BTreeMap::new())
                .unwrap()
                .volumes,
            None
        );
    }

    #[test]
    fn bad_mounts_and_names() {
        let err = container_body(&spec("mounts = [\"/data\"]"), &BTreeMap::new()).unwrap_err();
        assert_eq!(err.kind, RuntimeErrorKind::NotFound);
        assert_eq!(container_name("a/b c"), "celeriac-a-b-c");
    }
}
