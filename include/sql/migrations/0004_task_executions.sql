-- Which worker ran which task, for which location: operators' first question when a site
-- misbehaves, and the proof that each site's work runs on that site's worker.
CREATE TABLE task_execution (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dag_id      text NOT NULL,
    task_id     text NOT NULL,
    run_id      text NOT NULL,
    map_index   integer NOT NULL DEFAULT -1,
    try_number  integer NOT NULL DEFAULT 1,
    location    text,
    worker      text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX task_execution_run ON task_execution (dag_id, run_id);
