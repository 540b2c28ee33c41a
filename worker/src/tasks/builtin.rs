//! Built-in tasks that run inside the worker, without a runtime:
//! `celeriac.echo` returns its first positional argument (health checks,
//! benchmarks); `celeriac.sleep` sleeps its first argument in seconds.

use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    Echo,
    Sleep,
}

/// How a built-in ended.
#[derive(Debug, Clone, PartialEq)]
pub enum BuiltinOutcome {
    Returned(Value),
    /// Bad arguments: `TypeError` as Python would raise it.
    TypeError(String),
    /// Stopped by a signal (terminate, time limit).
    Interrupted,
}

impl Builtin {
    pub const ALL: [Builtin; 2] = [Builtin::Echo, Builtin::Sleep];

    pub fn name(self) -> &'static str {
        match self {
            Builtin::Echo => "celeriac.echo",
            Builtin::Sleep => "celeriac.sleep",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|b| b.name() == name)
    }

    pub async fn run(self, args: &[Value], stop: &CancellationToken) -> BuiltinOutcome {
        match self {
            Builtin::Echo => BuiltinOutcome::Returned(args.first().cloned().unwrap_or(Value::Null)),
            Builtin::Sleep => {
                let secs =
                    match args.first().and_then(Value::as_f64) {
                        Some(s) if s >= 0.0 && s.is_finite() => s,
                        _ => return BuiltinOutcome::TypeError(
                            "celeriac.sleep expects the number of seconds as its first argument"
                                .into(),
                        ),
                    };
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs_f64(secs)) => BuiltinOutcome::Returned(Value::Null),
                    _ = stop.cancelled() => BuiltinOutcome::Interrupted,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn echo_returns_first_argument() {
        let stop = CancellationToken::new();
        assert_eq!(
            Builtin::Echo.run(&[json!({"a": 1}), json!(2)], &stop).await,
            BuiltinOutcome::Returned(json!({"a": 1}))
        );
        assert_eq!(
            Builtin::Echo.run(&[], &stop).await,
            BuiltinOutcome::Returned(Value::Null)
        );
    }

    #[tokio::test]
    async fn sleep_is_interruptible() {
        let stop = CancellationToken::new();
        stop.cancel();
        assert_eq!(
            Builtin::Sleep.run(&[json!(60)], &stop).await,
            BuiltinOutcome::Interrupted
        );
        assert!(matches!(
            Builtin::Sleep.run(&[json!("x")], &stop).await,
            BuiltinOutcome::TypeError(_)
        ));
    }
}
