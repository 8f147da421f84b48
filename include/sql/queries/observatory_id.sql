SELECT id FROM observatory WHERE name = %(name)s;
