"""icu-watch: shared contracts, settings, Kafka clients and the `icu` command line."""

__version__ = "0.1.0"
