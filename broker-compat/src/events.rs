//! celeryev events: worker-* and task-* events, Lamport clock, task.multi batches (spec §5).
