-- By-hand measurement (not run in CI): the metastore query on a task_instance
-- table of 10 million rows with Airflow 3.3's columns and indexes.
--   createdb -h 127.0.0.1 -U postgres ti10m
--   psql -h 127.0.0.1 -U postgres -d ti10m -f scaler/bench/ti_10m.sql
-- Distribution: 9.9994 M finished rows, 400 queued + 200 running (a busy
-- Airflow: parallelism caps queued+running), 10 % on queue `high`, 5 % with
-- executor `KubernetesExecutor`.
--
-- Measured 2026-12-02 (PostgreSQL 15, 2-core VM shared with other builds;
-- load 7 min 45 s):
--   scaler query: Index Scan using ti_state, Index Cond state = ANY
--     ('{queued,running}'), queue/executor as Filter over the 600 rows:
--     1.37 ms cold, 0.66 ms warm (EXPLAIN ANALYZE execution time).
--   chart query: Bitmap Index Scan on ti_state (BitmapOr): 0.67 ms warm.
--   celeriac-scaler --once (debug build, new connection each run):
--     poll_seconds 8-18 ms; decision_seconds 0.16-0.30 ms.
--   loop, --polling-interval 200ms, 40 ticks (pooled connection):
--     poll mean 4.2 ms (21/40 <= 2.5 ms, all <= 39 ms);
--     decision after the poll (decide + dry-run act) mean 69 us, all <= 160 us.
-- Loop measurement:
--   celeriac-scaler --metastore-url postgres://postgres@127.0.0.1/ti10m \
--     --queues default --concurrency 16 --polling-interval 200ms \
--     --admin-addr 127.0.0.1:19809 &
--   sleep 8; curl -s 127.0.0.1:19809/metrics | grep -E 'poll_duration|decision_duration'
\timing on
DROP TABLE IF EXISTS task_instance;

CREATE TABLE task_instance (
    id uuid NOT NULL,
    task_id character varying(250) NOT NULL,
    dag_id character varying(250) NOT NULL,
    run_id character varying(250) NOT NULL,
    map_index integer NOT NULL DEFAULT '-1'::integer,
    start_date timestamp with time zone,
    end_date timestamp with time zone,
    duration double precision,
    state character varying(20),
    try_number integer NOT NULL,
    max_tries integer NOT NULL DEFAULT '-1'::integer,
    hostname character varying(1000),
    unixname character varying(1000),
    pool character varying(256) NOT NULL,
    pool_slots integer NOT NULL,
    queue character varying(256),
    priority_weight integer,
    operator character varying(1000),
    custom_operator_name character varying(1000),
    queued_dttm timestamp with time zone,
    scheduled_dttm timestamp with time zone,
    queued_by_job_id integer,
    last_heartbeat_at timestamp with time zone,
    pid integer,
    executor character varying(1000),
    executor_config bytea,
    updated_at timestamp with time zone,
    rendered_map_index character varying(250),
    context_carrier jsonb,
    span_status character varying(250) NOT NULL DEFAULT 'not_started'::character varying,
    external_executor_id text,
    trigger_id integer,
    trigger_timeout timestamp with time zone,
    next_method character varying(1000),
    next_kwargs jsonb,
    task_display_name character varying(2000),
    dag_version_id uuid,
    retry_delay_override double precision,
    retry_reason character varying(1000),
    CONSTRAINT task_instance_pkey PRIMARY KEY (id),
    CONSTRAINT task_instance_composite_key UNIQUE (dag_id, task_id, run_id, map_index)
);

INSERT INTO task_instance (id, task_id, dag_id, run_id, map_index, state, try_number,
    pool, pool_slots, queue, executor, start_date, end_date, priority_weight)
SELECT gen_random_uuid(), 't' || (i % 100), 'dag_' || (i % 500), 'run_' || (i / 50000), i,
       CASE WHEN i % 50000 < 1 THEN 'running' WHEN i % 50000 < 3 THEN 'queued'
            WHEN i % 50 = 7 THEN 'failed' WHEN i % 50 = 9 THEN 'skipped' ELSE 'success' END,
       1, 'default_pool', 1,
       CASE WHEN i % 10 = 3 THEN 'high' ELSE 'default' END,
       CASE WHEN i % 20 = 5 THEN 'KubernetesExecutor' END,
       now() - make_interval(secs => i), now() - make_interval(secs => i) + interval '3 s', 1
FROM generate_series(1, 10000000) AS i;
CREATE INDEX ti_dag_state ON task_instance (dag_id, state);
CREATE INDEX ti_dag_run ON task_instance (dag_id, run_id);
CREATE INDEX ti_state ON task_instance (state);
CREATE INDEX ti_state_lkp ON task_instance (dag_id, task_id, run_id, state);
CREATE INDEX ti_pool ON task_instance (pool, state, priority_weight);
CREATE INDEX ti_trigger_id ON task_instance (trigger_id);
CREATE INDEX ti_heartbeat ON task_instance (last_heartbeat_at);
VACUUM ANALYZE task_instance;
SELECT state, count(*) FROM task_instance GROUP BY state ORDER BY 2 DESC;
-- The scaler's query exactly as it sends it (values bound; inlined here).
EXPLAIN (ANALYZE, BUFFERS)
SELECT COUNT(CASE WHEN state = 'running' THEN 1 END) AS running,
       COUNT(CASE WHEN state = 'queued' THEN 1 END) AS queued
FROM task_instance WHERE state IN ('queued', 'running') AND queue IN ('default')
  AND (executor IS NULL OR executor NOT IN ('KubernetesExecutor'));
-- The chart's KEDA query, for comparison.
EXPLAIN (ANALYZE, BUFFERS)
SELECT ceil(COUNT(*)::decimal / 16) FROM task_instance
WHERE (state='running' OR state='queued') AND queue IN ('default');
