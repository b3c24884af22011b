"""Run records: the schema, one run's folder and identity, and provenance."""
