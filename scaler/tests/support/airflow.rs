//! `task_instance` as Airflow 3.3 creates it: the columns of
//! `../shared/fixtures/airflow/task_instance_rows.json` (information_schema
//! of a real 3.3.2 metastore) and the indexes of Airflow's TaskInstance model.

use super::{FreshDb, Server};

const PG_DDL: &str = r#"
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
CREATE INDEX ti_dag_state ON task_instance (dag_id, state);
CREATE INDEX ti_dag_run ON task_instance (dag_id, run_id);
CREATE INDEX ti_state ON task_instance (state);
CREATE INDEX ti_state_lkp ON task_instance (dag_id, task_id, run_id, state);
CREATE INDEX ti_pool ON task_instance (pool, state, priority_weight);
CREATE INDEX ti_trigger_id ON task_instance (trigger_id);
CREATE INDEX ti_heartbeat ON task_instance (last_heartbeat_at);
"#;

/// The same table in MySQL/MariaDB types (as Airflow's migrations map them).
const MYSQL_DDL: &str = r#"
CREATE TABLE task_instance (
    id char(36) NOT NULL,
    task_id varchar(250) NOT NULL,
    dag_id varchar(250) NOT NULL,
    run_id varchar(250) NOT NULL,
    map_index integer NOT NULL DEFAULT -1,
    start_date timestamp(6) NULL,
    end_date timestamp(6) NULL,
    state varchar(20),
    try_number integer NOT NULL,
    max_tries integer NOT NULL DEFAULT -1,
    hostname varchar(1000),
    pool varchar(256) NOT NULL,
    pool_slots integer NOT NULL,
    queue varchar(256),
    priority_weight integer,
    executor varchar(1000),
    external_executor_id text,
    span_status varchar(250) NOT NULL DEFAULT 'not_started',
    PRIMARY KEY (id),
    UNIQUE KEY task_instance_composite_key (dag_id, task_id, run_id, map_index),
    KEY ti_state (state),
    KEY ti_dag_state (dag_id, state)
);
"#;

/// One row to insert: (state, queue, executor).
pub type Ti<'a> = (Option<&'a str>, &'a str, Option<&'a str>);

pub async fn create_task_instance(db: &FreshDb) {
    match db.server {
        Server::Postgres => db.exec(PG_DDL).await,
        Server::MariaDb => db.exec(MYSQL_DDL).await,
    }
}

/// Insert rows; task ids are unique per row.
pub async fn insert(db: &FreshDb, rows: &[Ti<'_>]) {
    let lit = |v: Option<&str>| v.map_or("NULL".to_owned(), |s| format!("'{s}'"));
    let mut sql = String::new();
    for (i, (state, queue, executor)) in rows.iter().enumerate() {
        let id = match db.server {
            Server::Postgres => "gen_random_uuid()".to_owned(),
            Server::MariaDb => "uuid()".to_owned(),
        };
        sql.push_str(&format!(
            "INSERT INTO task_instance (id, task_id, dag_id, run_id, map_index, state, try_number, \
             pool, pool_slots, queue, executor) VALUES ({id}, 't{i}_{}', 'dag', 'run_1', -1, {}, 1, \
             'default_pool', 1, '{queue}', {});",
            uuid::Uuid::new_v4().simple(),
            lit(*state),
            lit(*executor)
        ));
    }
    db.exec(&sql).await;
}
