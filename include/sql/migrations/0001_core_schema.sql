-- ops-db core schema: topology, observational hierarchy, data hierarchy,
-- transfers, archive, staging, physical copies, routes and retention.
--
-- Every state column is a PostgreSQL enum, so the database itself refuses a
-- value the pipeline does not know. Every query that looks for work has an
-- index (mostly partial, so it stays small however large the history grows).

CREATE TYPE status AS ENUM ('PENDING', 'SCHEDULED', 'IN_PROGRESS', 'COMPLETED', 'FAILED');
CREATE TYPE location_type AS ENUM ('SOURCE', 'BUFFER', 'LONG_TERM_ARCHIVE', 'PROCESSING');
CREATE TYPE storage_type AS ENUM ('DISK', 'S3', 'TAPE');
CREATE TYPE physical_copy_status AS ENUM (
    'PRESENT', 'STAGED', 'DELETION_SCHEDULED', 'DELETION_IN_PROGRESS',
    'DELETION_POSSIBLE', 'DELETED', 'DELETION_FAILED'
);
CREATE TYPE route_type AS ENUM ('DIRECT', 'RELAY', 'CUSTOM');
CREATE TYPE transfer_method AS ENUM ('bbcp', 'rsync', 'local');

-- Topology -------------------------------------------------------------------

CREATE TABLE site (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    short_name  text NOT NULL UNIQUE CHECK (short_name ~ '^[a-z][a-z0-9_]*$'),
    name        text NOT NULL,
    location    text,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE data_location (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site_id         bigint NOT NULL REFERENCES site (id),
    name            text NOT NULL CHECK (name ~ '^[a-z][a-z0-9_]*$'),
    location_type   location_type NOT NULL,
    storage_type    storage_type NOT NULL,
    priority        integer NOT NULL DEFAULT 1 CHECK (priority >= 0),
    active          boolean NOT NULL DEFAULT true,
    -- DISK
    root_path       text,
    host            text,
    -- S3
    s3_endpoint_url text,
    s3_bucket       text,
    s3_region       text,
    s3_prefix       text,
    s3_conn_id      text,
    -- TAPE
    tape_library    text,
    -- stage settings (package size limits, bundle age, checksum algorithm, ...)
    settings        jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (site_id, name),
    CONSTRAINT storage_details CHECK (
        CASE storage_type
            WHEN 'DISK' THEN root_path IS NOT NULL
            WHEN 'S3' THEN s3_bucket IS NOT NULL
            WHEN 'TAPE' THEN tape_library IS NOT NULL
        END
    )
);
CREATE INDEX data_location_active_type ON data_location (location_type, site_id, priority) WHERE active;

CREATE TABLE retention_policy (
    data_location_id        bigint PRIMARY KEY REFERENCES data_location (id),
    retention_period        interval NOT NULL DEFAULT '0 seconds',
    disk_pressure_threshold double precision CHECK (disk_pressure_threshold > 0 AND disk_pressure_threshold <= 1),
    min_lta_copies          integer NOT NULL DEFAULT 1 CHECK (min_lta_copies >= 1),
    updated_at              timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE data_transfer_route (
    id                      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name                    text NOT NULL UNIQUE,
    route_type              route_type NOT NULL,
    origin_site_id          bigint NOT NULL REFERENCES site (id),
    destination_site_id     bigint NOT NULL REFERENCES site (id),
    via_site_id             bigint REFERENCES site (id),
    origin_location_id      bigint REFERENCES data_location (id),
    destination_location_id bigint REFERENCES data_location (id),
    method                  transfer_method NOT NULL DEFAULT 'rsync',
    settings                jsonb NOT NULL DEFAULT '{}'::jsonb,
    active                  boolean NOT NULL DEFAULT true,
    updated_at              timestamptz NOT NULL DEFAULT now(),
    CHECK (origin_site_id <> destination_site_id),
    CHECK ((route_type = 'RELAY') = (via_site_id IS NOT NULL)),
    CHECK (route_type <> 'CUSTOM' OR (origin_location_id IS NOT NULL AND destination_location_id IS NOT NULL))
);

-- Round-robin position per origin site, kept in ops-db so it survives restarts.
CREATE TABLE round_robin_state (
    origin_site_id bigint PRIMARY KEY REFERENCES site (id),
    last_index     integer NOT NULL DEFAULT -1,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- Observational hierarchy (minimal) -------------------------------------------

CREATE TABLE observatory (
    id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL UNIQUE
);

CREATE TABLE telescope (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    observatory_id bigint NOT NULL REFERENCES observatory (id),
    name           text NOT NULL UNIQUE
);

CREATE TABLE instrument (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    telescope_id bigint NOT NULL REFERENCES telescope (id),
    name         text NOT NULL UNIQUE
);

CREATE TABLE instrument_module (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    instrument_id bigint NOT NULL REFERENCES instrument (id),
    name          text NOT NULL,
    UNIQUE (instrument_id, name)
);

CREATE TABLE observing_program (
    id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL UNIQUE
);

CREATE TABLE obs_unit (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    observing_program_id bigint NOT NULL REFERENCES observing_program (id),
    name                 text NOT NULL,
    UNIQUE (observing_program_id, name)
);

CREATE TABLE executed_obs_unit (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    obs_unit_id bigint NOT NULL REFERENCES obs_unit (id),
    start_time  timestamptz NOT NULL,
    end_time    timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (obs_unit_id, start_time),
    CHECK (end_time IS NULL OR end_time >= start_time)
);

-- Data hierarchy ---------------------------------------------------------------

CREATE TABLE data_transfer_package (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name               text NOT NULL UNIQUE,
    origin_location_id bigint NOT NULL REFERENCES data_location (id),
    size_bytes         bigint CHECK (size_bytes >= 0),
    checksum           text CHECK (checksum ~ '^[a-z0-9_]+:[0-9a-f]+$'),
    status             status NOT NULL DEFAULT 'PENDING',
    failure_reason     text,
    attempts           integer NOT NULL DEFAULT 0,
    created_at         timestamptz NOT NULL DEFAULT now(),
    status_changed_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX data_transfer_package_work ON data_transfer_package (origin_location_id, status, id)
    WHERE status IN ('PENDING', 'SCHEDULED', 'IN_PROGRESS');

CREATE TABLE raw_data_package (
    id                       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name                     text NOT NULL UNIQUE,
    executed_obs_unit_id     bigint NOT NULL REFERENCES executed_obs_unit (id),
    instrument_module_id     bigint NOT NULL REFERENCES instrument_module (id),
    source_location_id       bigint NOT NULL REFERENCES data_location (id),
    relative_path            text NOT NULL,
    size_bytes               bigint CHECK (size_bytes >= 0),
    checksum                 text CHECK (checksum ~ '^[a-z0-9_]+:[0-9a-f]+$'),
    oversized                boolean NOT NULL DEFAULT false,
    status                   status NOT NULL DEFAULT 'PENDING',
    failure_reason           text,
    attempts                 integer NOT NULL DEFAULT 0,
    data_transfer_package_id bigint REFERENCES data_transfer_package (id),
    archived_at              timestamptz,
    created_at               timestamptz NOT NULL DEFAULT now(),
    status_changed_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX raw_data_package_work ON raw_data_package (source_location_id, status, id)
    WHERE status IN ('PENDING', 'SCHEDULED', 'IN_PROGRESS');
CREATE INDEX raw_data_package_unbundled ON raw_data_package (id)
    WHERE status = 'COMPLETED' AND data_transfer_package_id IS NULL;
CREATE INDEX raw_data_package_bundle ON raw_data_package (data_transfer_package_id)
    WHERE data_transfer_package_id IS NOT NULL;
CREATE INDEX raw_data_package_observation ON raw_data_package (executed_obs_unit_id);

CREATE TABLE raw_data_file (
    id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    executed_obs_unit_id bigint NOT NULL REFERENCES executed_obs_unit (id),
    instrument_module_id bigint NOT NULL REFERENCES instrument_module (id),
    source_location_id   bigint NOT NULL REFERENCES data_location (id),
    relative_path        text NOT NULL CHECK (relative_path !~ '^/' AND relative_path !~ '(^|/)\.\.(/|$)'),
    size_bytes           bigint NOT NULL CHECK (size_bytes >= 0),
    checksum             text NOT NULL CHECK (checksum ~ '^[a-z0-9_]+:[0-9a-f]+$'),
    raw_data_package_id  bigint REFERENCES raw_data_package (id),
    created_at           timestamptz NOT NULL DEFAULT now(),
    UNIQUE (source_location_id, relative_path)
);
-- Files waiting to be packaged: tiny, whatever the archive's size.
CREATE INDEX raw_data_file_unpackaged ON raw_data_file (source_location_id, executed_obs_unit_id, instrument_module_id)
    WHERE raw_data_package_id IS NULL;
CREATE INDEX raw_data_file_package ON raw_data_file (raw_data_package_id)
    WHERE raw_data_package_id IS NOT NULL;
CREATE INDEX raw_data_file_observation ON raw_data_file (executed_obs_unit_id);

-- Transfers --------------------------------------------------------------------

CREATE TABLE data_transfer (
    id                       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    data_transfer_package_id bigint NOT NULL REFERENCES data_transfer_package (id),
    origin_location_id       bigint NOT NULL REFERENCES data_location (id),
    destination_location_id  bigint NOT NULL REFERENCES data_location (id),
    route_id                 bigint REFERENCES data_transfer_route (id),
    method                   transfer_method NOT NULL DEFAULT 'rsync',
    status                   status NOT NULL DEFAULT 'PENDING',
    unpack_status            status NOT NULL DEFAULT 'PENDING',
    attempts                 integer NOT NULL DEFAULT 0,
    failure_reason           text,
    created_at               timestamptz NOT NULL DEFAULT now(),
    status_changed_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (data_transfer_package_id, destination_location_id),
    CHECK (origin_location_id <> destination_location_id)
);
CREATE INDEX data_transfer_work ON data_transfer (origin_location_id, status, id)
    WHERE status IN ('PENDING', 'SCHEDULED', 'IN_PROGRESS');
CREATE INDEX data_transfer_unpack_work ON data_transfer (destination_location_id, unpack_status, id)
    WHERE status = 'COMPLETED' AND unpack_status IN ('PENDING', 'SCHEDULED', 'IN_PROGRESS');

-- One row per attempt; the command output lives in the file at log_path.
CREATE TABLE data_transfer_log (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    data_transfer_id bigint NOT NULL REFERENCES data_transfer (id),
    attempt          integer NOT NULL,
    log_path         text NOT NULL,
    succeeded        boolean,
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (data_transfer_id, attempt)
);

CREATE TABLE long_term_archive_transfer (
    id                      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    raw_data_package_id     bigint NOT NULL REFERENCES raw_data_package (id),
    origin_location_id      bigint NOT NULL REFERENCES data_location (id),
    destination_location_id bigint NOT NULL REFERENCES data_location (id),
    status                  status NOT NULL DEFAULT 'PENDING',
    attempts                integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    requires_intervention   boolean GENERATED ALWAYS AS (attempts >= 3 AND status <> 'COMPLETED') STORED,
    failure_reason          text,
    created_at              timestamptz NOT NULL DEFAULT now(),
    status_changed_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (raw_data_package_id, destination_location_id)
);
CREATE INDEX long_term_archive_transfer_work ON long_term_archive_transfer (origin_location_id, status, id)
    WHERE status IN ('PENDING', 'SCHEDULED', 'IN_PROGRESS') AND attempts < 3;

-- Staging ----------------------------------------------------------------------

CREATE TABLE staging_job (
    id                      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name                    text NOT NULL UNIQUE,
    requested_by            text,
    destination_location_id bigint NOT NULL REFERENCES data_location (id),
    request                 jsonb NOT NULL DEFAULT '{}'::jsonb,
    retention_period        interval,
    status                  status NOT NULL DEFAULT 'PENDING',
    attempts                integer NOT NULL DEFAULT 0,
    failure_reason          text,
    created_at              timestamptz NOT NULL DEFAULT now(),
    status_changed_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX staging_job_work ON staging_job (destination_location_id, status, id)
    WHERE status IN ('PENDING', 'SCHEDULED', 'IN_PROGRESS');

CREATE TABLE staging_job_package (
    staging_job_id      bigint NOT NULL REFERENCES staging_job (id),
    raw_data_package_id bigint NOT NULL REFERENCES raw_data_package (id),
    status              status NOT NULL DEFAULT 'PENDING',
    PRIMARY KEY (staging_job_id, raw_data_package_id)
);

-- Physical copies --------------------------------------------------------------

-- Where each file, package or bundle physically is. Exactly one subject per row.
CREATE TABLE physical_copy (
    id                       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    data_location_id         bigint NOT NULL REFERENCES data_location (id),
    raw_data_file_id         uuid REFERENCES raw_data_file (id),
    raw_data_package_id      bigint REFERENCES raw_data_package (id),
    data_transfer_package_id bigint REFERENCES data_transfer_package (id),
    staging_job_id           bigint REFERENCES staging_job (id),
    path                     text NOT NULL,
    checksum                 text CHECK (checksum ~ '^[a-z0-9_]+:[0-9a-f]+$'),
    status                   physical_copy_status NOT NULL DEFAULT 'PRESENT',
    verified_at              timestamptz,
    failure_reason           text,
    created_at               timestamptz NOT NULL DEFAULT now(),
    status_changed_at        timestamptz NOT NULL DEFAULT now(),
    CHECK (num_nonnulls(raw_data_file_id, raw_data_package_id, data_transfer_package_id) = 1)
);
CREATE UNIQUE INDEX physical_copy_file_location ON physical_copy (raw_data_file_id, data_location_id)
    WHERE raw_data_file_id IS NOT NULL;
CREATE UNIQUE INDEX physical_copy_package_location ON physical_copy (raw_data_package_id, data_location_id, coalesce(staging_job_id, 0))
    WHERE raw_data_package_id IS NOT NULL;
CREATE UNIQUE INDEX physical_copy_bundle_location ON physical_copy (data_transfer_package_id, data_location_id)
    WHERE data_transfer_package_id IS NOT NULL;
CREATE INDEX physical_copy_deletion_work ON physical_copy (data_location_id, status, id)
    WHERE status IN ('DELETION_SCHEDULED', 'DELETION_IN_PROGRESS', 'DELETION_POSSIBLE', 'DELETION_FAILED');
CREATE INDEX physical_copy_live_by_location ON physical_copy (data_location_id, created_at)
    WHERE status IN ('PRESENT', 'STAGED');

-- Stuck-work sweeps look at IN_PROGRESS rows older than a threshold.
CREATE INDEX raw_data_package_stuck ON raw_data_package (status_changed_at) WHERE status = 'IN_PROGRESS';
CREATE INDEX data_transfer_package_stuck ON data_transfer_package (status_changed_at) WHERE status = 'IN_PROGRESS';
CREATE INDEX data_transfer_stuck ON data_transfer (status_changed_at) WHERE status = 'IN_PROGRESS';
CREATE INDEX long_term_archive_transfer_stuck ON long_term_archive_transfer (status_changed_at) WHERE status = 'IN_PROGRESS';
CREATE INDEX long_term_archive_transfer_intervention ON long_term_archive_transfer (id) WHERE requires_intervention;
