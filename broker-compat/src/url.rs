//! Broker and result-backend URLs as Celery spells them, and password masking
//! so that no URL is ever logged with its secret.

use url::Url;

/// The URL with any password replaced by `****` (as kombu's `maybe_sanitize_url`).
/// Text that does not parse as a URL is returned with everything between
/// `://` and `@` masked, so a malformed URL still never leaks its secret.
pub fn mask_password(raw: &str) -> String {
    match Url::parse(raw) {
        Ok(mut u) if u.password().is_some() => {
            // set_password only fails for cannot-be-a-base URLs, which have no password.
            let _ = u.set_password(Some("****"));
            u.to_string()
        }
        Ok(_) => raw.to_owned(),
        Err(_) => match (raw.find("://"), raw.rfind('@')) {
            (Some(s), Some(a)) if a > s + 3 => format!("{}****{}", &raw[..s + 3], &raw[a..]),
            _ => raw.to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_passwords() {
        assert_eq!(
            mask_password("redis://:s3cret@localhost:6379/0"),
            "redis://:****@localhost:6379/0"
        );
        assert_eq!(
            mask_password("amqp://guest:guest@localhost:5672//"),
            "amqp://guest:****@localhost:5672//"
        );
        assert_eq!(mask_password("redis://localhost/1"), "redis://localhost/1");
        assert_eq!(
            mask_password("db+postgresql://u:p w@h/db"),
            "db+postgresql://u:****@h/db"
        );
    }
}
