-- The state machines, enforced by ops-db itself.
--
-- status_transition holds every legal move of every status column: the transition table
-- of ccat_operators.states (COLUMNS), which tests/test_states.py keeps equal to these
-- rows. A trigger on each status column refuses any other move, whoever makes it: a
-- stray UPDATE fails with check_violation naming the table, column and move. Inserts are
-- not guarded (a row starts in its initial state); a row whose status does not change is
-- not checked. To change a state machine, change states.py and add a migration that
-- inserts or deletes the rows that differ.

CREATE TABLE status_transition (
    table_name  text NOT NULL,
    column_name text NOT NULL,
    from_status text NOT NULL,
    to_status   text NOT NULL,
    PRIMARY KEY (table_name, column_name, from_status, to_status)
);

INSERT INTO status_transition (table_name, column_name, from_status, to_status) VALUES
    ('data_transfer', 'status', 'COMPLETED', 'PENDING'),
    ('data_transfer', 'status', 'FAILED', 'PENDING'),
    ('data_transfer', 'status', 'IN_PROGRESS', 'COMPLETED'),
    ('data_transfer', 'status', 'IN_PROGRESS', 'FAILED'),
    ('data_transfer', 'status', 'IN_PROGRESS', 'PENDING'),
    ('data_transfer', 'status', 'PENDING', 'FAILED'),
    ('data_transfer', 'status', 'PENDING', 'SCHEDULED'),
    ('data_transfer', 'status', 'SCHEDULED', 'FAILED'),
    ('data_transfer', 'status', 'SCHEDULED', 'IN_PROGRESS'),
    ('data_transfer', 'status', 'SCHEDULED', 'PENDING'),
    ('data_transfer', 'unpack_status', 'FAILED', 'PENDING'),
    ('data_transfer', 'unpack_status', 'IN_PROGRESS', 'COMPLETED'),
    ('data_transfer', 'unpack_status', 'IN_PROGRESS', 'FAILED'),
    ('data_transfer', 'unpack_status', 'IN_PROGRESS', 'PENDING'),
    ('data_transfer', 'unpack_status', 'PENDING', 'FAILED'),
    ('data_transfer', 'unpack_status', 'PENDING', 'SCHEDULED'),
    ('data_transfer', 'unpack_status', 'SCHEDULED', 'FAILED'),
    ('data_transfer', 'unpack_status', 'SCHEDULED', 'IN_PROGRESS'),
    ('data_transfer', 'unpack_status', 'SCHEDULED', 'PENDING'),
    ('data_transfer_package', 'status', 'FAILED', 'PENDING'),
    ('data_transfer_package', 'status', 'IN_PROGRESS', 'COMPLETED'),
    ('data_transfer_package', 'status', 'IN_PROGRESS', 'FAILED'),
    ('data_transfer_package', 'status', 'IN_PROGRESS', 'PENDING'),
    ('data_transfer_package', 'status', 'PENDING', 'FAILED'),
    ('data_transfer_package', 'status', 'PENDING', 'SCHEDULED'),
    ('data_transfer_package', 'status', 'SCHEDULED', 'FAILED'),
    ('data_transfer_package', 'status', 'SCHEDULED', 'IN_PROGRESS'),
    ('data_transfer_package', 'status', 'SCHEDULED', 'PENDING'),
    ('long_term_archive_transfer', 'status', 'FAILED', 'PENDING'),
    ('long_term_archive_transfer', 'status', 'IN_PROGRESS', 'COMPLETED'),
    ('long_term_archive_transfer', 'status', 'IN_PROGRESS', 'FAILED'),
    ('long_term_archive_transfer', 'status', 'IN_PROGRESS', 'PENDING'),
    ('long_term_archive_transfer', 'status', 'PENDING', 'FAILED'),
    ('long_term_archive_transfer', 'status', 'PENDING', 'SCHEDULED'),
    ('long_term_archive_transfer', 'status', 'SCHEDULED', 'FAILED'),
    ('long_term_archive_transfer', 'status', 'SCHEDULED', 'IN_PROGRESS'),
    ('long_term_archive_transfer', 'status', 'SCHEDULED', 'PENDING'),
    ('physical_copy', 'status', 'DELETED', 'PRESENT'),
    ('physical_copy', 'status', 'DELETED', 'STAGED'),
    ('physical_copy', 'status', 'DELETION_FAILED', 'DELETION_SCHEDULED'),
    ('physical_copy', 'status', 'DELETION_FAILED', 'PRESENT'),
    ('physical_copy', 'status', 'DELETION_FAILED', 'STAGED'),
    ('physical_copy', 'status', 'DELETION_IN_PROGRESS', 'DELETED'),
    ('physical_copy', 'status', 'DELETION_IN_PROGRESS', 'DELETION_FAILED'),
    ('physical_copy', 'status', 'DELETION_IN_PROGRESS', 'DELETION_POSSIBLE'),
    ('physical_copy', 'status', 'DELETION_POSSIBLE', 'DELETION_SCHEDULED'),
    ('physical_copy', 'status', 'DELETION_SCHEDULED', 'DELETION_IN_PROGRESS'),
    ('physical_copy', 'status', 'DELETION_SCHEDULED', 'PRESENT'),
    ('physical_copy', 'status', 'DELETION_SCHEDULED', 'STAGED'),
    ('physical_copy', 'status', 'PRESENT', 'DELETION_SCHEDULED'),
    ('physical_copy', 'status', 'STAGED', 'DELETION_SCHEDULED'),
    ('raw_data_package', 'status', 'FAILED', 'PENDING'),
    ('raw_data_package', 'status', 'IN_PROGRESS', 'COMPLETED'),
    ('raw_data_package', 'status', 'IN_PROGRESS', 'FAILED'),
    ('raw_data_package', 'status', 'IN_PROGRESS', 'PENDING'),
    ('raw_data_package', 'status', 'PENDING', 'FAILED'),
    ('raw_data_package', 'status', 'PENDING', 'SCHEDULED'),
    ('raw_data_package', 'status', 'SCHEDULED', 'FAILED'),
    ('raw_data_package', 'status', 'SCHEDULED', 'IN_PROGRESS'),
    ('raw_data_package', 'status', 'SCHEDULED', 'PENDING'),
    ('staging_job', 'status', 'FAILED', 'PENDING'),
    ('staging_job', 'status', 'IN_PROGRESS', 'COMPLETED'),
    ('staging_job', 'status', 'IN_PROGRESS', 'FAILED'),
    ('staging_job', 'status', 'IN_PROGRESS', 'PENDING'),
    ('staging_job', 'status', 'PENDING', 'FAILED'),
    ('staging_job', 'status', 'PENDING', 'SCHEDULED'),
    ('staging_job', 'status', 'SCHEDULED', 'FAILED'),
    ('staging_job', 'status', 'SCHEDULED', 'IN_PROGRESS'),
    ('staging_job', 'status', 'SCHEDULED', 'PENDING'),
    ('staging_job_package', 'status', 'FAILED', 'COMPLETED'),
    ('staging_job_package', 'status', 'FAILED', 'PENDING'),
    ('staging_job_package', 'status', 'PENDING', 'COMPLETED'),
    ('staging_job_package', 'status', 'PENDING', 'FAILED');

CREATE FUNCTION guard_status_transition() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    guarded     text := TG_ARGV[0];
    old_status  text := to_jsonb(OLD) ->> TG_ARGV[0];
    new_status  text := to_jsonb(NEW) ->> TG_ARGV[0];
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM status_transition AS t
        WHERE t.table_name = TG_TABLE_NAME AND t.column_name = guarded
          AND t.from_status = old_status AND t.to_status = new_status
    ) THEN
        RAISE EXCEPTION 'illegal state change: %.% cannot move from % to %', TG_TABLE_NAME, guarded,
                        old_status, new_status
            USING ERRCODE = 'check_violation',
                  HINT = 'the legal moves are the rows of status_transition (ccat_operators.states)';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER raw_data_package_status_guard
    BEFORE UPDATE OF status ON raw_data_package
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION guard_status_transition('status');

CREATE TRIGGER data_transfer_package_status_guard
    BEFORE UPDATE OF status ON data_transfer_package
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION guard_status_transition('status');

CREATE TRIGGER data_transfer_status_guard
    BEFORE UPDATE OF status ON data_transfer
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION guard_status_transition('status');

CREATE TRIGGER data_transfer_unpack_status_guard
    BEFORE UPDATE OF unpack_status ON data_transfer
    FOR EACH ROW WHEN (OLD.unpack_status IS DISTINCT FROM NEW.unpack_status)
    EXECUTE FUNCTION guard_status_transition('unpack_status');

CREATE TRIGGER long_term_archive_transfer_status_guard
    BEFORE UPDATE OF status ON long_term_archive_transfer
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION guard_status_transition('status');

CREATE TRIGGER staging_job_status_guard
    BEFORE UPDATE OF status ON staging_job
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION guard_status_transition('status');

CREATE TRIGGER staging_job_package_status_guard
    BEFORE UPDATE OF status ON staging_job_package
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION guard_status_transition('status');

CREATE TRIGGER physical_copy_status_guard
    BEFORE UPDATE OF status ON physical_copy
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION guard_status_transition('status');
