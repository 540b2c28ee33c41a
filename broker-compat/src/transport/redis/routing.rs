//! kombu's virtual exchanges on top of the `_kombu.binding.<exchange>`
//! tables (spec §2.3): which queues a (exchange, routing key) reaches.

use crate::transport::ExchangeType;

/// One parsed binding-table member `rk + sep + pattern + sep + queue`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub routing_key: String,
    pub pattern: String,
    pub queue: String,
}

impl Binding {
    /// kombu splits on `sep` and unpacks three fields; anything else is a
    /// foreign member (kombu would raise) and is skipped.
    pub fn parse(member: &str, sep: &str) -> Option<Binding> {
        let mut parts = member.split(sep);
        let b = Binding {
            routing_key: parts.next()?.to_owned(),
            pattern: parts.next()?.to_owned(),
            queue: parts.next()?.to_owned(),
        };
        parts.next().is_none().then_some(b)
    }
}

/// The pattern column kombu stores for a binding: a regex for topic
/// exchanges (`TopicExchange.key_to_pattern`), empty otherwise.
pub fn binding_pattern(exchange_type: ExchangeType, routing_key: &str) -> String {
    match exchange_type {
        ExchangeType::Topic => key_to_pattern(routing_key),
        ExchangeType::Direct | ExchangeType::Fanout => String::new(),
    }
}

/// `'^%s$' % r'\.'.join(wildcards.get(w, w) for w in escape_regex(rkey, '.#*').split('.'))`
/// with `*` → `.*?[^\.]` and `#` → `.*?`.
fn key_to_pattern(rkey: &str) -> String {
    let words: Vec<String> = rkey
        .split('.')
        .map(|w| match w {
            "*" => r".*?[^\.]".to_owned(),
            "#" => ".*?".to_owned(),
            w => w.chars().map(escape_regex_char).collect(),
        })
        .collect();
    format!("^{}$", words.join(r"\."))
}

/// kombu's `escape_regex(p, white='.#*')` for one character.
fn escape_regex_char(c: char) -> String {
    match c {
        c if c.is_alphanumeric() || matches!(c, '.' | '#' | '*') => c.to_string(),
        '\0' => "\\000".to_owned(),
        c => format!("\\{c}"),
    }
}

/// The queues a message reaches, as kombu's `DirectExchange.lookup` /
/// `TopicExchange.lookup` compute them (each queue once, table order).
pub fn lookup(bindings: &[Binding], exchange_type: ExchangeType, routing_key: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for b in bindings {
        let hit = match exchange_type {
            ExchangeType::Direct => b.routing_key == routing_key,
            ExchangeType::Topic => topic_matches(&b.routing_key, routing_key),
            ExchangeType::Fanout => true,
        };
        if hit && !out.contains(&b.queue) {
            out.push(b.queue.clone());
        }
    }
    out
}

enum Token<'a> {
    Word(&'a str),
    /// `*`: kombu's `.*?[^\.]` — one or more characters ending in a non-dot.
    Star,
    /// `#`: kombu's `.*?` — any text, possibly empty.
    Hash,
}

/// Whether `routing_key` matches the regex kombu builds from `binding_key`.
/// This reproduces kombu's regex semantics rather than AMQP's (e.g. `*` can
/// span dots, `a.#` needs the `a.`), so both sides route identically.
pub fn topic_matches(binding_key: &str, routing_key: &str) -> bool {
    let tokens: Vec<Token> = binding_key
        .split('.')
        .map(|w| match w {
            "*" => Token::Star,
            "#" => Token::Hash,
            w => Token::Word(w),
        })
        .collect();
    match_from(&tokens, routing_key.as_bytes(), true)
}

fn match_from(tokens: &[Token], s: &[u8], first: bool) -> bool {
    let Some((tok, rest)) = tokens.split_first() else {
        return s.is_empty();
    };
    let s = if first {
        s
    } else {
        match s.strip_prefix(b".") {
            Some(s) => s,
            None => return false,
        }
    };
    match tok {
        Token::Word(w) => s
            .strip_prefix(w.as_bytes())
            .is_some_and(|r| match_from(rest, r, false)),
        Token::Hash => (0..=s.len()).any(|i| match_from(rest, &s[i..], false)),
        Token::Star => (1..=s.len())
            .filter(|i| s[i - 1] != b'.')
            .any(|i| match_from(rest, &s[i..], false)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn patterns_are_kombus() {
        assert_eq!(key_to_pattern("worker.#"), r"^worker\..*?$");
        assert_eq!(key_to_pattern("a_b.*"), r"^a\_b\..*?[^\.]$");
        assert_eq!(key_to_pattern("#"), "^.*?$");
    }

    #[test]
    fn topic_matching_follows_kombus_regexes() {
        let cases = [
            ("worker.#", "worker.heartbeat", true),
            ("worker.#", "worker.", true),
            ("worker.#", "worker", false),
            ("#", "anything.at.all", true),
            ("*.b", "a.b", true),
            ("*.b", "x.y.b", true),
            ("*.b", ".b", false),
            ("a.*", "a.b", true),
            ("a.*", "a.", false),
            ("a.b", "a.b", true),
            ("a.b", "a.bc", false),
            ("task.*", "worker.online", false),
        ];
        for (bk, rk, want) in cases {
            assert_eq!(topic_matches(bk, rk), want, "{bk} vs {rk}");
        }
    }

    #[test]
    fn lookup_dedups_and_parses() {
        let b = Binding::parse("celery\x06\x16\x06\x16celery", "\x06\x16").unwrap();
        assert_eq!(b.queue, "celery");
        assert!(Binding::parse("junk", "\x06\x16").is_none());
        let t = vec![b.clone(), b];
        assert_eq!(lookup(&t, ExchangeType::Direct, "celery"), ["celery"]);
        assert!(lookup(&t, ExchangeType::Direct, "other").is_empty());
    }
}
