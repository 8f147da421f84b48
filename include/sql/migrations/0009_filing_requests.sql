-- Filing requests (issue 15): observations filed over HTTP (POST /ccat/api/v1/observations).
--
-- The api-server checks what it can without the files (the manifest, the location, the
-- instrument and its modules, the shape of every path) and records the request here. A
-- worker of the SOURCE location (ccat_filing, on the location's raw_data_package_creation
-- queue) claims it (FOR UPDATE SKIP LOCKED), checks the files where they are and files the
-- observation (ccat_operators.filing.file_observation), and writes the outcome in the same
-- transaction: a request is ACCEPTED exactly when its observation and files are recorded,
-- REFUSED with every problem and nothing recorded, or still open (outcome NULL).
--
-- The outcome is written once, never changed (filing_request_written_once): it is not a
-- state machine with moves, so it is not a status column of ccat_operators.states.
CREATE TABLE filing_request (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source_location_id   bigint NOT NULL REFERENCES data_location (id),
    manifest             jsonb NOT NULL CHECK (jsonb_typeof(manifest) = 'object'),
    requested_by         text NOT NULL,
    requested_at         timestamptz NOT NULL DEFAULT now(),
    outcome              text CHECK (outcome IN ('ACCEPTED', 'REFUSED')),
    problems             jsonb CHECK (jsonb_typeof(problems) = 'array'),
    executed_obs_unit_id bigint REFERENCES executed_obs_unit (id),
    new_files            integer CHECK (new_files >= 0),
    already_filed        integer CHECK (already_filed >= 0),
    worker               text,
    finished_at          timestamptz,
    CHECK ((outcome IS NULL) = (finished_at IS NULL)),
    CHECK (outcome IS DISTINCT FROM 'ACCEPTED'
           OR (executed_obs_unit_id IS NOT NULL AND new_files IS NOT NULL AND already_filed IS NOT NULL)),
    CHECK (outcome IS DISTINCT FROM 'REFUSED' OR jsonb_array_length(problems) > 0)
);

-- A worker looks for the open requests of its location, oldest first.
CREATE INDEX filing_request_open ON filing_request (source_location_id, id) WHERE outcome IS NULL;

CREATE FUNCTION refuse_filing_outcome_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'filing request % was already decided (%): its outcome is written once', OLD.id, OLD.outcome
        USING ERRCODE = 'check_violation';
END
$$;

CREATE TRIGGER filing_request_written_once
    BEFORE UPDATE ON filing_request
    FOR EACH ROW WHEN (OLD.outcome IS NOT NULL)
    EXECUTE FUNCTION refuse_filing_outcome_change();
