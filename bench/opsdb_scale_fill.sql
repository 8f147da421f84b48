-- Bulk fill of ops-db for bench/opsdb_scale.py: a realistic, mostly finished history.
--
-- Sizes come from the one-row table bench_scale, which opsdb_scale.py creates from its
-- arguments (see Scale there); the sites, locations and instrument modules come from
-- include/topology/ccat.yaml, already applied. Each "-- step:" line starts one step,
-- which the script runs and times on its own.
--
-- Rows of the tables that others point at get explicit ids (OVERRIDING SYSTEM VALUE), so
-- every reference is computed from a formula instead of joined; the last step moves the
-- identity sequences past them. Foreign keys are not checked during the fill
-- (session_replication_role = replica): the ids are consistent by construction. CHECK,
-- NOT NULL and UNIQUE constraints and every index are maintained as usual.
--
-- Time line: package p (1 .. packages) was created (packages - p + 1) * step_seconds
-- before t0, so the history spans years and the newest package is minutes old.
--   packages 1 .. bundled_until            COMPLETED (a few FAILED), each in a bundle
--                                           (data_transfer_package); archived if their
--                                           bundle is done (id <= dtps_done)
--   .. packages - open_packages            COMPLETED, not bundled yet
--   the open_packages newest               IN_PROGRESS (the oldest stuck ones first),
--                                           SCHEDULED, then PENDING
-- Every package has ~files/packages files; unpackaged_files more files, from the newest
-- observations, are in no package yet. All files are at ccat/telescope_computer.
--
-- Bundles 1 .. dtps_done are done: routed, both transfer legs (ccat/buffer -> the
-- primary archive site's buffer, then the fan-out leg to the other site's buffer)
-- COMPLETED and unpacked. The newer ones are in flight, dtp_stage bundles per step,
-- oldest first: 2 steps unpacking, 2 in transfer, 1 COMPLETED but not routed, then
-- 1 IN_PROGRESS and 1 PENDING (being written).

-- step: session settings and helpers
SET session_replication_role = replica;
CREATE TEMP VIEW bench_location AS
SELECT site.short_name || '/' || l.name AS key, l.id
FROM data_location AS l JOIN site ON site.id = l.site_id;
CREATE TEMP TABLE bench_module AS
SELECT array_agg(id ORDER BY id) AS ids FROM instrument_module;

-- step: observing programs, obs units, executed obs units
INSERT INTO observing_program (id, name) OVERRIDING SYSTEM VALUE
SELECT g, 'program_' || lpad(g::text, 3, '0')
FROM bench_scale AS s, generate_series(1, s.programs) AS g;

INSERT INTO obs_unit (id, observing_program_id, name) OVERRIDING SYSTEM VALUE
SELECT g, (g - 1) % s.programs + 1, 'obs_unit_' || lpad(g::text, 5, '0')
FROM bench_scale AS s, generate_series(1, s.obs_units) AS g;

-- Observation e (packaged ones) started two hours before its first package was made
-- (or would have been: with more observations than packages some have none); the
-- unpackaged ones are the newest, five minutes apart.
INSERT INTO executed_obs_unit (id, obs_unit_id, start_time, end_time, created_at) OVERRIDING SYSTEM VALUE
SELECT e, (e - 1) % s.obs_units + 1, t.start_time, t.start_time + interval '50 minutes',
       t.start_time + interval '55 minutes'
FROM bench_scale AS s
CROSS JOIN generate_series(1, s.eous_packaged + s.eous_unpackaged) AS e
CROSS JOIN LATERAL (
    SELECT CASE
        WHEN e <= s.eous_packaged THEN
            s.t0 - make_interval(secs => (s.packages - (e - 1)::double precision * s.packages / s.eous_packaged) * s.step_seconds + 7200)
        ELSE
            s.t0 - make_interval(secs => (s.eous_packaged + s.eous_unpackaged - e + 1) * 300 + 3600.5)
    END AS start_time
) AS t;

-- step: data transfer packages (bundles)
INSERT INTO data_transfer_package (id, name, origin_location_id, size_bytes, checksum, status, attempts,
                                   routed_at, created_at, status_changed_at) OVERRIDING SYSTEM VALUE
SELECT d, 'dtp_' || lpad(d::text, 7, '0'),
       (SELECT id FROM bench_location WHERE key = 'ccat/buffer'),
       (s.packages / s.dtps) * 5000000000 + (d * 7919) % 1000000000,
       'sha256:' || md5('dtp' || d) || md5('dtp' || d),
       t.status, CASE WHEN t.status = 'PENDING' THEN 0 ELSE 1 END,
       CASE WHEN t.rank <= 4 * s.dtp_stage THEN t.changed_at + interval '5 minutes' END,
       t.created_at, t.changed_at
FROM bench_scale AS s
CROSS JOIN generate_series(1, s.dtps) AS d
CROSS JOIN LATERAL (
    SELECT d - s.dtps_done AS rank,
           CASE WHEN d - s.dtps_done <= 5 * s.dtp_stage THEN 'COMPLETED'
                WHEN d - s.dtps_done <= 6 * s.dtp_stage THEN 'IN_PROGRESS'
                ELSE 'PENDING' END::status AS status,
           s.t0 - make_interval(secs => (s.packages - d * s.bundled_until / s.dtps) * s.step_seconds - 1800)
               AS created_at,
           CASE WHEN d <= s.dtps_done
                THEN s.t0 - make_interval(secs => (s.packages - d * s.bundled_until / s.dtps) * s.step_seconds - 5400)
                ELSE s.t0 - (180 - (d - s.dtps_done) * 5) * interval '1 minute' END AS changed_at
) AS t;

-- step: raw data packages
INSERT INTO raw_data_package (id, name, executed_obs_unit_id, instrument_module_id, source_location_id,
                              relative_path, size_bytes, checksum, status, failure_reason, attempts,
                              data_transfer_package_id, archived_at, created_at, status_changed_at)
    OVERRIDING SYSTEM VALUE
SELECT p, 'pkg_' || lpad(p::text, 8, '0'), a.eou, a.module,
       (SELECT id FROM bench_location WHERE key = 'ccat/telescope_computer'),
       'packages/' || lpad(a.eou::text, 7, '0') || '/pkg_' || lpad(p::text, 8, '0') || '.tar',
       (s.files / s.packages) * 120000000 + (p * 7919) % 100000000,
       'sha256:' || md5('pkg' || p) || md5('pkg' || p),
       b.status,
       CASE WHEN b.status = 'FAILED' THEN 'checksum mismatch: file changed while packaging' END,
       CASE b.status WHEN 'PENDING' THEN 0 WHEN 'FAILED' THEN 3 ELSE 1 END,
       b.dtp,
       CASE WHEN b.dtp <= s.dtps_done THEN a.created_at + interval '2 days' END,
       a.created_at,
       CASE b.status
           WHEN 'COMPLETED' THEN a.created_at + interval '20 minutes'
           WHEN 'FAILED' THEN a.created_at + interval '30 minutes'
           WHEN 'IN_PROGRESS' THEN
               CASE WHEN a.open_rank <= s.stuck
                    THEN s.t0 - (120 + a.open_rank * 10) * interval '1 minute'
                    ELSE s.t0 - (a.open_rank % 50 + 1) * interval '1 minute' END
           WHEN 'SCHEDULED' THEN s.t0 - (a.open_rank % 30 + 1) * interval '1 minute'
           ELSE a.created_at
       END
FROM bench_scale AS s
CROSS JOIN bench_module AS m
CROSS JOIN generate_series(1, s.packages) AS p
CROSS JOIN LATERAL (
    SELECT (p - 1) * s.eous_packaged / s.packages + 1 AS eou,
           m.ids[(p - 1) % cardinality(m.ids) + 1] AS module,
           s.t0 - make_interval(secs => (s.packages - p + 1) * s.step_seconds) AS created_at,
           p - (s.packages - s.open_packages) AS open_rank,
           p % s.failed_every = s.failed_every / 2 AND p <= s.packages - s.open_packages AS failed
) AS a
CROSS JOIN LATERAL (
    SELECT CASE
               WHEN a.open_rank > s.in_progress + s.scheduled THEN 'PENDING'
               WHEN a.open_rank > s.in_progress THEN 'SCHEDULED'
               WHEN a.open_rank > 0 THEN 'IN_PROGRESS'
               WHEN a.failed THEN 'FAILED'
               ELSE 'COMPLETED'
           END::status AS status,
           CASE WHEN p <= s.bundled_until AND NOT a.failed
                THEN (p - 1) * s.dtps / s.bundled_until + 1 END AS dtp
) AS b;

-- step: raw data files in packages
-- File k belongs to package (k - 1) * packages / packaged_files + 1 and shares its
-- observation and instrument module; it was written an hour before the package.
INSERT INTO raw_data_file (executed_obs_unit_id, instrument_module_id, source_location_id, relative_path,
                           size_bytes, checksum, raw_data_package_id, created_at)
SELECT a.eou, a.module,
       (SELECT id FROM bench_location WHERE key = 'ccat/telescope_computer'),
       'obs/' || lpad(a.eou::text, 7, '0') || '/m' || a.module || '/file_' || lpad(k::text, 9, '0') || '.fits',
       20000000 + (k * 7919) % 200000000,
       'sha256:' || md5(k::text) || md5(k::text),
       a.p,
       s.t0 - make_interval(secs => (s.packages - a.p + 1) * s.step_seconds + 3600)
FROM bench_scale AS s
CROSS JOIN bench_module AS m
CROSS JOIN generate_series(1::bigint, s.packaged_files) AS k
CROSS JOIN LATERAL (
    SELECT (k - 1) * s.packages / s.packaged_files + 1 AS p
) AS f
CROSS JOIN LATERAL (
    SELECT f.p AS p,
           (f.p - 1) * s.eous_packaged / s.packages + 1 AS eou,
           m.ids[(f.p - 1) % cardinality(m.ids) + 1] AS module
) AS a;

-- step: raw data files not in a package yet
INSERT INTO raw_data_file (executed_obs_unit_id, instrument_module_id, source_location_id, relative_path,
                           size_bytes, checksum, created_at)
SELECT a.eou, a.module,
       (SELECT id FROM bench_location WHERE key = 'ccat/telescope_computer'),
       'obs/' || lpad(a.eou::text, 7, '0') || '/m' || a.module || '/new_' || lpad(k::text, 9, '0') || '.fits',
       20000000 + (k * 7919) % 200000000,
       'sha256:' || md5('new' || k) || md5('new' || k),
       s.t0 - make_interval(secs => (s.unpackaged_files - k + 1) * 0.5)
FROM bench_scale AS s
CROSS JOIN bench_module AS m
CROSS JOIN generate_series(1::bigint, s.unpackaged_files) AS k
CROSS JOIN LATERAL (
    SELECT s.eous_packaged + (k - 1) * s.eous_unpackaged / s.unpackaged_files + 1 AS eou,
           m.ids[(k - 1) % cardinality(m.ids) + 1] AS module
) AS a;

-- step: data transfers
-- Bundle d's primary leg (id 2d - 1) goes to the buffer of archive site cologne (d even)
-- or us (d odd); its secondary leg (id 2d) fans out from there to the other site's
-- buffer and depends on the primary leg.
INSERT INTO data_transfer (id, data_transfer_package_id, origin_location_id, destination_location_id,
                           depends_on_transfer_id, method, status, unpack, unpack_status, attempts,
                           bytes_sent, seconds, created_at, status_changed_at, unpack_status_changed_at)
    OVERRIDING SYSTEM VALUE
SELECT 2 * d.id - 1 + leg.secondary::int, d.id,
       CASE WHEN leg.secondary THEN l.first_buffer ELSE d.origin_location_id END,
       CASE WHEN leg.secondary THEN l.other_buffer ELSE l.first_buffer END,
       CASE WHEN leg.secondary THEN 2 * d.id - 1 END,
       CASE WHEN leg.secondary THEN 'rsync' ELSE 'bbcp' END::transfer_method,
       t.status, true, t.unpack_status,
       CASE WHEN t.status = 'PENDING' THEN 0 ELSE 1 END,
       CASE WHEN t.status = 'COMPLETED' THEN d.size_bytes END,
       CASE WHEN t.status = 'COMPLETED' THEN d.size_bytes / 1e8 END,
       d.routed_at,
       CASE WHEN t.rank <= 0 THEN d.routed_at + interval '2 hours' * (1 + leg.secondary::int)
            ELSE s.t0 - (t.rank % 20 + 1) * interval '1 minute' END,
       CASE WHEN t.rank <= 0 THEN d.routed_at + interval '3 hours' * (1 + leg.secondary::int)
            ELSE s.t0 - (t.rank % 20 + 1) * interval '1 minute' END
FROM bench_scale AS s
CROSS JOIN data_transfer_package AS d
CROSS JOIN (VALUES (false), (true)) AS leg (secondary)
CROSS JOIN LATERAL (
    SELECT (SELECT id FROM bench_location WHERE key = CASE WHEN d.id % 2 = 0 THEN 'cologne/buffer' ELSE 'us/buffer' END)
               AS first_buffer,
           (SELECT id FROM bench_location WHERE key = CASE WHEN d.id % 2 = 0 THEN 'us/buffer' ELSE 'cologne/buffer' END)
               AS other_buffer
) AS l
CROSS JOIN LATERAL (
    SELECT d.id - s.dtps_done AS rank,
           CASE
               WHEN d.id <= s.dtps_done THEN 'COMPLETED'
               WHEN d.id - s.dtps_done <= 2 * s.dtp_stage THEN
                   CASE WHEN leg.secondary THEN 'IN_PROGRESS' ELSE 'COMPLETED' END
               WHEN leg.secondary THEN 'PENDING'
               ELSE (ARRAY['PENDING', 'SCHEDULED', 'IN_PROGRESS'])[(d.id - s.dtps_done) % 3 + 1]
           END::status AS status,
           CASE
               WHEN d.id <= s.dtps_done THEN 'COMPLETED'
               WHEN leg.secondary OR d.id - s.dtps_done > 2 * s.dtp_stage THEN 'PENDING'
               WHEN d.id - s.dtps_done <= s.dtp_stage THEN 'PENDING'
               ELSE 'IN_PROGRESS'
           END::status AS unpack_status
) AS t
WHERE d.routed_at IS NOT NULL;

-- step: long-term archive transfers
-- One COMPLETED transfer per archived package, from the primary archive site's buffer.
INSERT INTO long_term_archive_transfer (raw_data_package_id, origin_location_id, destination_location_id,
                                        status, attempts, created_at, status_changed_at)
SELECT p.id,
       CASE WHEN p.data_transfer_package_id % 2 = 0 THEN cb.id ELSE ub.id END,
       CASE WHEN p.data_transfer_package_id % 2 = 0 THEN cl.id ELSE ul.id END,
       'COMPLETED', 1, p.archived_at - interval '1 hour', p.archived_at
FROM raw_data_package AS p
CROSS JOIN (SELECT id FROM bench_location WHERE key = 'cologne/buffer') AS cb
CROSS JOIN (SELECT id FROM bench_location WHERE key = 'us/buffer') AS ub
CROSS JOIN (SELECT id FROM bench_location WHERE key = 'cologne/lta') AS cl
CROSS JOIN (SELECT id FROM bench_location WHERE key = 'us/lta') AS ul
WHERE p.archived_at IS NOT NULL;

-- step: package copies at ccat/buffer
-- PRESENT for the newest buffer_present packages (and any not archived yet), then
-- DELETION_SCHEDULED for deletion_scheduled more, DELETED for the rest.
INSERT INTO physical_copy (data_location_id, raw_data_package_id, path, checksum, status, verified_at,
                           created_at, status_changed_at)
SELECT (SELECT id FROM bench_location WHERE key = 'ccat/buffer'),
       p.id, p.relative_path, p.checksum, c.status, p.status_changed_at, p.status_changed_at,
       CASE WHEN c.status = 'PRESENT' THEN p.status_changed_at ELSE p.status_changed_at + interval '3 days' END
FROM bench_scale AS s
CROSS JOIN raw_data_package AS p
CROSS JOIN LATERAL (
    SELECT CASE
               WHEN p.id > s.packages - s.buffer_present OR p.archived_at IS NULL THEN 'PRESENT'
               WHEN p.id > s.packages - s.buffer_present - s.deletion_scheduled THEN 'DELETION_SCHEDULED'
               ELSE 'DELETED'
           END::physical_copy_status AS status
) AS c
WHERE p.status = 'COMPLETED';

-- step: package copies at the long-term archives
-- One PRESENT copy per archived package, at its bundle's primary archive site.
INSERT INTO physical_copy (data_location_id, raw_data_package_id, path, checksum, status, verified_at,
                           created_at, status_changed_at)
SELECT CASE WHEN p.data_transfer_package_id % 2 = 0 THEN cl.id ELSE ul.id END,
       p.id, p.relative_path, p.checksum, 'PRESENT', p.archived_at, p.archived_at, p.archived_at
FROM raw_data_package AS p
CROSS JOIN (SELECT id FROM bench_location WHERE key = 'cologne/lta') AS cl
CROSS JOIN (SELECT id FROM bench_location WHERE key = 'us/lta') AS ul
WHERE p.archived_at IS NOT NULL;

-- step: bundle copies at ccat/buffer
-- DELETED once the bundle is done, PRESENT while it is in flight.
INSERT INTO physical_copy (data_location_id, data_transfer_package_id, path, checksum, status, verified_at,
                           created_at, status_changed_at)
SELECT d.origin_location_id, d.id, 'bundles/' || d.name || '.tar', d.checksum,
       CASE WHEN d.id <= s.dtps_done THEN 'DELETED' ELSE 'PRESENT' END::physical_copy_status,
       d.status_changed_at, d.status_changed_at, d.status_changed_at + interval '3 days' * (d.id <= s.dtps_done)::int
FROM bench_scale AS s
CROSS JOIN data_transfer_package AS d
WHERE d.status = 'COMPLETED';

-- step: identity sequences past the explicit ids
SELECT setval(pg_get_serial_sequence('observing_program', 'id'), (SELECT max(id) FROM observing_program));
SELECT setval(pg_get_serial_sequence('obs_unit', 'id'), (SELECT max(id) FROM obs_unit));
SELECT setval(pg_get_serial_sequence('executed_obs_unit', 'id'), (SELECT max(id) FROM executed_obs_unit));
SELECT setval(pg_get_serial_sequence('data_transfer_package', 'id'), (SELECT max(id) FROM data_transfer_package));
SELECT setval(pg_get_serial_sequence('raw_data_package', 'id'), (SELECT max(id) FROM raw_data_package));
SELECT setval(pg_get_serial_sequence('data_transfer', 'id'), (SELECT max(id) FROM data_transfer));
