INSERT INTO schema_migrations (version, filename, sha256)
VALUES (%(version)s, %(filename)s, %(sha256)s);
