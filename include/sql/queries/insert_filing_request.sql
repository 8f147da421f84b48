-- A filing request the api-server validated, open until a worker of its SOURCE location
-- decides it (ccat_operators.filing_requests).
INSERT INTO filing_request (source_location_id, manifest, requested_by)
VALUES (%(source_location_id)s, %(manifest)s, %(requested_by)s)
RETURNING id;
