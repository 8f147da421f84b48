-- Jobs of one request (its generations), newest first, with how many staged copies they lost.
SELECT j.name,
       (SELECT count(*) FROM physical_copy AS c
         WHERE c.staging_job_id = j.id AND c.status NOT IN ('STAGED', 'PRESENT')) AS expired_copies
FROM staging_job AS j
WHERE j.name = %(name)s OR j.name LIKE %(name)s || '\_%%'
ORDER BY j.id DESC;
