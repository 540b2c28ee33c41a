//! The Lua scripts that make pop/settle atomic (see the `.lua` files for
//! their KEYS/ARGV contracts). `redis::Script` runs EVALSHA and falls back
//! to loading the script on NOSCRIPT, so a restarted server is handled.

use std::sync::LazyLock;

use redis::Script;

/// RPOP over the lists in order + ZADD unacked_index + HSET unacked.
pub static POP: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/pop.lua")));

/// Compare-and-settle one unacked entry, optionally pushing it back.
pub static RESTORE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/restore.lua")));

/// Compare-and-delete of the visibility sweep mutex.
pub static RELEASE_MUTEX: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/release_mutex.lua")));
