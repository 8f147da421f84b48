-- Self-healing (issue 13): faults counted only against the item at fault, copies the
-- audit finds lost or corrupt, and what the audit found.

-- A transfer counts only the tries that failed through a fault of the bundle itself (it
-- arrived with the wrong size or checksum); `attempts` still counts every try.
ALTER TABLE data_transfer ADD COLUMN faults integer NOT NULL DEFAULT 0 CHECK (faults >= 0);

-- Copies the audit found absent from storage (LOST) or not the recorded bytes (CORRUPT).
-- They are no longer counted as copies by any rule; a repair writes and verifies them again.
ALTER TYPE physical_copy_status ADD VALUE 'LOST';
ALTER TYPE physical_copy_status ADD VALUE 'CORRUPT';

-- The new moves of the transition table (ccat_operators.states).
INSERT INTO status_transition (table_name, column_name, from_status, to_status) VALUES
    ('data_transfer', 'unpack_status', 'COMPLETED', 'PENDING'),
    ('long_term_archive_transfer', 'status', 'COMPLETED', 'PENDING'),
    ('physical_copy', 'status', 'PRESENT', 'LOST'),
    ('physical_copy', 'status', 'PRESENT', 'CORRUPT'),
    ('physical_copy', 'status', 'STAGED', 'LOST'),
    ('physical_copy', 'status', 'STAGED', 'CORRUPT'),
    ('physical_copy', 'status', 'LOST', 'PRESENT'),
    ('physical_copy', 'status', 'CORRUPT', 'PRESENT'),
    ('physical_copy', 'status', 'LOST', 'STAGED'),
    ('physical_copy', 'status', 'CORRUPT', 'STAGED');

-- What the audit (ccat_audit, `ccat audit`) found at a location: a copy lost or corrupt,
-- or a dark file (on storage, unknown to ops-db). A finding stays open until a later audit
-- sees it resolved (repaired, or the dark file gone or filed); it is never deleted.
CREATE TABLE audit_finding (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    data_location_id bigint NOT NULL REFERENCES data_location (id),
    kind             text NOT NULL CHECK (kind IN ('lost', 'corrupt', 'dark')),
    path             text NOT NULL,
    physical_copy_id bigint REFERENCES physical_copy (id),
    detail           text,
    repair           text,
    found_at         timestamptz NOT NULL DEFAULT now(),
    last_seen_at     timestamptz NOT NULL DEFAULT now(),
    resolved_at      timestamptz
);
CREATE UNIQUE INDEX audit_finding_open ON audit_finding (data_location_id, kind, path) WHERE resolved_at IS NULL;

-- The audit walks a location's live copies in id order, and looks files it finds on
-- storage up by path (is this file known to ops-db?).
CREATE INDEX physical_copy_live_by_id ON physical_copy (data_location_id, id) WHERE status IN ('PRESENT', 'STAGED');
CREATE INDEX physical_copy_location_path ON physical_copy (data_location_id, path);
