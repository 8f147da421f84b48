SELECT o.name AS observatory, t.name AS telescope
FROM telescope AS t JOIN observatory AS o ON o.id = t.observatory_id
ORDER BY t.id LIMIT 1;
