"""Infrastructure: embedded broker and database, topic admin, schema migrations, readiness."""
