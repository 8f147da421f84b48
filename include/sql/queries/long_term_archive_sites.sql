-- Sites with an active long-term archive, in a stable order (the round-robin ring).
SELECT s.id, s.short_name
FROM site AS s
WHERE EXISTS (
    SELECT 1 FROM data_location AS l
    WHERE l.site_id = s.id AND l.active AND l.location_type = 'LONG_TERM_ARCHIVE'
)
ORDER BY s.id;
