"""Event sinks: the dispatcher's delivery of the events stream to HTTP CloudEvents receivers and
NATS JetStream, each behind its own cursor and lease (runner.py)."""
