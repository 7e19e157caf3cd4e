"""PostgreSQL / TimescaleDB: migrations, the write path, maintenance and shared queries."""
