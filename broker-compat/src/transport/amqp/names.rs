//! AMQP short strings (names, routing keys, most properties) hold at most 255
//! bytes; lapin's `From<&str>` panics past that, so every caller-supplied
//! string goes through [`short`].

use lapin::types::ShortString;

use crate::{Error, Result};

/// `value` as a short string, or an encode error naming `what`.
pub fn short(what: &str, value: &str) -> Result<ShortString> {
    ShortString::try_new(value).map_err(|e| Error::Encode(format!("{what}: {e}")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn refuses_long_names() {
        assert_eq!(short("queue", "celery").unwrap().as_str(), "celery");
        assert!(short("queue", &"q".repeat(256)).is_err());
    }
}
