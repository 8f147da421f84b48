SELECT version, filename, sha256, applied_at FROM schema_migrations ORDER BY version;
