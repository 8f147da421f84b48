SELECT id FROM instrument WHERE name = %(name)s;
