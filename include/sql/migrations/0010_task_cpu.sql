-- What each task cost: the CPU seconds (its own process, its threads and the commands it
-- ran) and the wall-clock seconds of a task that succeeded; per stage, per gigabyte, this
-- is the product's own cost (bench/pipeline.py --airflow reads it).
ALTER TABLE task_execution
    ADD COLUMN cpu_seconds double precision CHECK (cpu_seconds >= 0),
    ADD COLUMN wall_seconds double precision CHECK (wall_seconds >= 0);
