//! Remote control (pidbox, spec §6): control requests and their node
//! filter, a node's mailbox (receive requests, send replies), reply value
//! helpers, and a client that broadcasts and collects replies.

mod client;
mod mailbox;
mod matcher;
mod reply;
mod request;

use std::time::Duration;

pub use client::ControlClient;
pub use mailbox::{Mailbox, Replier};
pub use matcher::{glob, matches};
pub use reply::{nok, ok, reply_message, unknown_command, ControlReply};
pub use request::{ControlRequest, ReplyTo};

/// `<control_exchange>.pidbox`: where requests are broadcast (fanout).
pub const PIDBOX_EXCHANGE: &str = "celery.pidbox";
/// `reply.<control_exchange>.pidbox`: where replies go (direct, rk = client oid).
pub const REPLY_EXCHANGE: &str = "reply.celery.pidbox";
/// `control_queue_ttl` default (`x-message-ttl`).
pub const QUEUE_TTL: Duration = Duration::from_secs(300);
/// `control_queue_expires` default (`x-expires`).
pub const QUEUE_EXPIRES: Duration = Duration::from_secs(10);
