//! Database result backend (`celery_taskmeta`) via sqlx (spec §4.3).
