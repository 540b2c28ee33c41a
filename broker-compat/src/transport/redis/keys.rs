//! Every Redis key and channel name the transport uses, with
//! `global_keyprefix` applied in one place (spec §2.2–§2.6).

use super::options::RedisOptions;

/// Key naming for one transport instance.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
    sep: String,
    steps: Vec<u8>,
    fanout_prefix: String,
    fanout_patterns: bool,
    unacked: String,
    unacked_index: String,
    unacked_mutex: String,
}

impl Keys {
    pub fn new(opts: &RedisOptions) -> Self {
        let mut steps = opts.priority_steps.clone();
        steps.sort_unstable();
        steps.dedup();
        if steps.first() != Some(&0) {
            steps.insert(0, 0);
        }
        Keys {
            prefix: opts.global_keyprefix.clone(),
            sep: opts.sep.clone(),
            steps,
            fanout_prefix: opts.fanout_prefix_str(),
            fanout_patterns: opts.fanout_patterns,
            unacked: opts.unacked_key.clone(),
            unacked_index: opts.unacked_index_key.clone(),
            unacked_mutex: opts.unacked_mutex_key.clone(),
        }
    }

    pub fn sep(&self) -> &str {
        &self.sep
    }

    pub fn steps(&self) -> &[u8] {
        &self.steps
    }

    fn prefixed(&self, key: &str) -> String {
        format!("{}{}", self.prefix, key)
    }

    /// kombu's `priority(n)`: the largest step ≤ n, with n clamped to 0..=9
    /// (`_get_message_priority`; missing or invalid → 0).
    pub fn step_for(&self, priority: Option<u8>) -> u8 {
        let p = priority.unwrap_or(0).min(9);
        self.steps
            .iter()
            .copied()
            .filter(|s| *s <= p)
            .max()
            .unwrap_or(0)
    }

    /// The list holding `queue`'s messages of one priority step (prefixed).
    pub fn queue_list(&self, queue: &str, step: u8) -> String {
        if step == 0 {
            self.prefixed(queue)
        } else {
            self.prefixed(&format!("{queue}{}{step}", self.sep))
        }
    }

    /// All of a queue's lists, step 0 first.
    pub fn queue_lists(&self, queue: &str) -> Vec<String> {
        self.steps
            .iter()
            .map(|s| self.queue_list(queue, *s))
            .collect()
    }

    pub fn binding(&self, exchange: &str) -> String {
        self.prefixed(&format!("_kombu.binding.{exchange}"))
    }

    pub fn binding_permanent(&self, exchange: &str) -> String {
        self.prefixed(&format!("_kombu.binding_permanent.{exchange}"))
    }

    /// A binding table member: `routing_key + sep + pattern + sep + queue`.
    pub fn binding_member(&self, routing_key: &str, pattern: &str, queue: &str) -> String {
        [routing_key, pattern, queue].join(&self.sep)
    }

    pub fn unacked(&self) -> String {
        self.prefixed(&self.unacked)
    }

    pub fn unacked_index(&self) -> String {
        self.prefixed(&self.unacked_index)
    }

    pub fn unacked_mutex(&self) -> String {
        self.prefixed(&self.unacked_mutex)
    }

    /// kombu's `_get_publish_topic`, prefixed: `<fanout prefix><exchange>[/<rk>]`.
    pub fn fanout_channel(&self, exchange: &str, routing_key: &str) -> String {
        if !routing_key.is_empty() && self.fanout_patterns {
            self.prefixed(&format!("{}{exchange}/{routing_key}", self.fanout_prefix))
        } else {
            self.prefixed(&format!("{}{exchange}", self.fanout_prefix))
        }
    }

    /// The pattern a subscriber PSUBSCRIBEs: `#` in the binding key becomes `*`.
    pub fn fanout_pattern(&self, exchange: &str, binding_key: &str) -> String {
        self.fanout_channel(exchange, &binding_key.replace('#', "*"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn keys(prefix: &str) -> Keys {
        let mut o = RedisOptions::from_url("redis://localhost/0").unwrap();
        o.global_keyprefix = prefix.into();
        Keys::new(&o)
    }

    #[test]
    fn names_match_kombu() {
        let k = keys("");
        assert_eq!(
            k.queue_lists("celery"),
            [
                "celery",
                "celery\x06\x163",
                "celery\x06\x166",
                "celery\x06\x169"
            ]
        );
        let steps: Vec<u8> = (0..=9).map(|p| k.step_for(Some(p))).collect();
        assert_eq!(steps, [0, 0, 0, 3, 3, 3, 6, 6, 6, 9]);
        assert_eq!(k.step_for(Some(200)), 9);
        assert_eq!(
            k.binding_member("celery", "", "celery"),
            "celery\x06\x16\x06\x16celery"
        );
        assert_eq!(
            k.fanout_channel("celeryev", "worker.heartbeat"),
            "/0.celeryev/worker.heartbeat"
        );
        assert_eq!(k.fanout_channel("celery.pidbox", ""), "/0.celery.pidbox");
        assert_eq!(
            k.fanout_pattern("celeryev", "worker.#"),
            "/0.celeryev/worker.*"
        );
        let p = keys("pfx:");
        assert_eq!(p.unacked_index(), "pfx:unacked_index");
        assert_eq!(p.binding("celery"), "pfx:_kombu.binding.celery");
        assert_eq!(p.fanout_channel("x", ""), "pfx:/0.x");
    }
}
