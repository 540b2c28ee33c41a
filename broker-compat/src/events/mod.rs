//! celeryev events (spec §5): the Lamport clock, worker-* and task-* events
//! in Celery's exact field order, a dispatcher (single events and
//! `task.multi` batches) and a receiver.

mod clock;
mod dispatcher;
mod event;
mod receiver;
mod task_event;
mod worker_event;

pub use clock::LamportClock;
pub use dispatcher::{
    event_exchange_type, event_message, utcoffset_hours, EventDispatcher, BATCH_LIMIT,
    EVENT_EXCHANGE, MULTI_ROUTING_KEY,
};
pub use event::{routing_key_for, Event, Stamp};
pub use receiver::EventReceiver;
pub use task_event::{
    TaskReceived, TASK_FAILED, TASK_RECEIVED, TASK_REJECTED, TASK_RETRIED, TASK_REVOKED,
    TASK_STARTED, TASK_SUCCEEDED,
};
pub use worker_event::{Software, WorkerStatus, WORKER_HEARTBEAT, WORKER_OFFLINE, WORKER_ONLINE};
