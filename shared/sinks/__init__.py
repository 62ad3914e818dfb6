"""Event sinks: their configuration in the models file, their cursors and status in Redis."""
