SELECT id FROM site WHERE short_name = %(short_name)s;
