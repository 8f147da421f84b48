SELECT id FROM telescope WHERE name = %(name)s;
