-- Copies per location type and state: where the data is, and what was cleaned up.
SELECT l.location_type, c.status, count(*) AS copies
FROM physical_copy AS c
JOIN data_location AS l ON l.id = c.data_location_id
GROUP BY 1, 2
ORDER BY 1, 2;
