SELECT short_name, name, location FROM site ORDER BY id;
