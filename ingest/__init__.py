"""Camera and vitals ingest: bedside devices into Kafka."""


class IngestError(ValueError):
    """Input the ingest service cannot use (a bad file, URL or cameras file); the message says why."""
