SELECT id FROM data_transfer_route WHERE name = %(name)s;
