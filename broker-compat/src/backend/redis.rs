//! Redis result backend: `celery-task-meta-<id>` SETEX + PUBLISH (spec §4.2).
