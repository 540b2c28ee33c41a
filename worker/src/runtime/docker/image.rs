//! The profile's pull policy: `never` uses only local images,
//! `if-not-present` pulls a missing one, `always` pulls before every task.

use bollard::query_parameters::CreateImageOptionsBuilder;
use bollard::Docker;
use futures::TryStreamExt;

use super::{api_error, status};
use crate::routing::PullPolicy;
use crate::runtime::{RuntimeError, RuntimeErrorKind};

/// Make sure `image` is there to run, as the policy allows.
pub(super) async fn ensure(
    docker: &Docker,
    image: &str,
    policy: PullPolicy,
) -> Result<(), RuntimeError> {
    match policy {
        PullPolicy::Never => {
            if present(docker, image).await? {
                Ok(())
            } else {
                Err(RuntimeError::new(
                    RuntimeErrorKind::NotFound,
                    format!("image {image} is not present and the profile says pull = \"never\""),
                ))
            }
        }
        PullPolicy::IfNotPresent if present(docker, image).await? => Ok(()),
        PullPolicy::IfNotPresent | PullPolicy::Always => pull(docker, image).await,
    }
}

async fn present(docker: &Docker, image: &str) -> Result<bool, RuntimeError> {
    match docker.inspect_image(image).await {
        Ok(_) => Ok(true),
        Err(e) if status(&e) == Some(404) => Ok(false),
        Err(e) => Err(api_error(&format!("inspect image {image}"), e)),
    }
}

async fn pull(docker: &Docker, image: &str) -> Result<(), RuntimeError> {
    let (name, tag) = split_reference(image);
    let mut options = CreateImageOptionsBuilder::new().from_image(name);
    if let Some(tag) = tag {
        options = options.tag(tag);
    }
    let pulled = docker
        .create_image(Some(options.build()), None, None)
        .try_for_each(|_progress| async { Ok(()) })
        .await;
    let Err(e) = pulled else {
        return Ok(());
    };
    let err = api_error(&format!("pull {image}"), e);
    if err.kind == RuntimeErrorKind::Unavailable {
        return Err(err);
    }
    // A registry that refuses or cannot be reached leaves a missing image
    // missing: the task cannot run. With `always`, a stale local copy is not
    // used either; the registry may answer next time.
    if present(docker, image).await? {
        Err(RuntimeError::new(RuntimeErrorKind::Unavailable, err.detail))
    } else {
        Err(RuntimeError::new(RuntimeErrorKind::NotFound, err.detail))
    }
}

/// `repo[:tag]` or `repo@digest`. Without a tag the API would pull every tag
/// of the repository, so `latest` is named, as the docker CLI does.
fn split_reference(image: &str) -> (&str, Option<&str>) {
    if image.contains('@') {
        return (image, None);
    }
    let name_start = image.rfind('/').map_or(0, |i| i + 1);
    match image[name_start..].rfind(':') {
        Some(i) => (&image[..name_start + i], Some(&image[name_start + i + 1..])),
        None => (image, Some("latest")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::split_reference;

    #[test]
    fn references() {
        assert_eq!(split_reference("busybox"), ("busybox", Some("latest")));
        assert_eq!(split_reference("busybox:1.36"), ("busybox", Some("1.36")));
        assert_eq!(
            split_reference("reg:5000/a/b"),
            ("reg:5000/a/b", Some("latest"))
        );
        assert_eq!(
            split_reference("reg:5000/a/b:v2"),
            ("reg:5000/a/b", Some("v2"))
        );
        assert_eq!(split_reference("a@sha256:00"), ("a@sha256:00", None));
    }
}
