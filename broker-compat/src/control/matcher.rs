//! `kombu/matcher.py`: the `glob` (`fnmatch.fnmatch(node, pattern)`) and
//! `pcre` (`re.match(pattern, node)`) matchers used by pattern broadcasts.

/// Whether `node` matches `pattern` with the named matcher. An unknown
/// matcher or an invalid regex matches nothing (kombu raises, and the
/// worker then does not run the command either).
pub fn matches(matcher: &str, pattern: &str, node: &str) -> bool {
    match matcher {
        "glob" => glob(pattern, node),
        "pcre" => pcre(pattern, node),
        other => {
            tracing::warn!(
                matcher = other,
                "control request with an unknown matcher ignored"
            );
            false
        }
    }
}

/// `re.match`: anchored at the start only.
fn pcre(pattern: &str, node: &str) -> bool {
    match regex::Regex::new(&format!("^(?:{pattern})")) {
        Ok(re) => re.is_match(node),
        Err(e) => {
            tracing::warn!(pattern, error = %e, "control request with an invalid pcre pattern ignored");
            false
        }
    }
}

/// POSIX `fnmatch.fnmatch`: case-sensitive, whole string, `*` `?` `[seq]` `[!seq]`.
pub fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    glob_at(&p, &t)
}

fn glob_at(p: &[char], t: &[char]) -> bool {
    match p.first() {
        None => t.is_empty(),
        Some('*') => (0..=t.len()).any(|skip| glob_at(&p[1..], &t[skip..])),
        Some('?') => !t.is_empty() && glob_at(&p[1..], &t[1..]),
        Some('[') => match class(&p[1..]) {
            Some((len, hit)) => {
                t.first().is_some_and(|&c| hit(c)) && glob_at(&p[1 + len..], &t[1..])
            }
            // An unterminated `[` is a literal, as in fnmatch.translate.
            None => t.first() == Some(&'[') && glob_at(&p[1..], &t[1..]),
        },
        Some(&c) => t.first() == Some(&c) && glob_at(&p[1..], &t[1..]),
    }
}

/// Parse a `[...]` class body (after the `[`). Returns how many pattern
/// chars it used (including the closing `]`) and a membership test.
fn class(p: &[char]) -> Option<(usize, impl Fn(char) -> bool)> {
    let negate = p.first() == Some(&'!');
    let start = usize::from(negate);
    // A `]` right after `[` or `[!` is a member, not the end.
    let end = p
        .iter()
        .enumerate()
        .skip(start + 1)
        .find(|(_, &c)| c == ']')
        .map(|(i, _)| i)
        .filter(|_| p.len() > start)?;
    let body: Vec<char> = p[start..end].to_vec();
    let test = move |c: char| {
        let mut i = 0;
        let mut hit = false;
        while i < body.len() {
            if i + 2 < body.len() && body[i + 1] == '-' {
                hit |= body[i] <= c && c <= body[i + 2];
                i += 3;
            } else {
                hit |= body[i] == c;
                i += 1;
            }
        }
        hit != negate
    };
    Some((end + 1, test))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn glob_follows_fnmatch() {
        let cases = [
            ("celery@*", "celery@vm", true),
            ("celery@*", "worker@vm", false),
            ("*@vm", "celery@vm", true),
            ("celery@v?", "celery@vm", true),
            ("celery@v?", "celery@vmm", false),
            ("celery@[a-z]m", "celery@vm", true),
            ("celery@[!v]m", "celery@vm", false),
            ("celery@[]v]m", "celery@]m", true),
            ("CELERY@*", "celery@vm", false),
            ("celery@[vm", "celery@[vm", true),
            ("*", "", true),
        ];
        for (pattern, text, want) in cases {
            assert_eq!(glob(pattern, text), want, "{pattern} vs {text}");
        }
    }

    #[test]
    fn pcre_is_anchored_at_start_only() {
        assert!(matches("pcre", "celery@", "celery@vm"));
        assert!(matches("pcre", r"celery@v\w$", "celery@vm"));
        assert!(!matches("pcre", "vm", "celery@vm"));
        assert!(!matches("pcre", "(", "celery@vm"));
        assert!(!matches("nosuch", "*", "celery@vm"));
    }
}
