"""Ingest: the HTTP API. Accepts jobs, writes them to the ingest stream, serves job state and results."""
