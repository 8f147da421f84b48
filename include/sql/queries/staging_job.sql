SELECT * FROM staging_job WHERE id = %(id)s;
