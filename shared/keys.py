"""The one place that names every Redis key, stream and consumer group inferq uses.

All names live under the configured prefix (INFERQ_KEY_PREFIX), so several deployments can share
one Redis. inferq's Lua scripts touch several keys at once, so it needs a single Redis primary
(optionally with replicas), not Redis Cluster.
"""

from __future__ import annotations

# Consumer groups.
ROUTER_GROUP = "router"
COLLECTOR_GROUP = "collector"
WORKER_GROUP = "workers"

# Stream entry field that carries the msgpack-encoded message.
PAYLOAD_FIELD = "d"
# Field of the public events stream that carries one CloudEvents 1.0 JSON document.
EVENT_FIELD = "event"


class Keys:
    """Key names for one prefix."""

    def __init__(self, prefix: str = "inferq") -> None:
        self.prefix = prefix
        # Streams.
        self.ingest_stream = f"{prefix}:stream:ingest"
        self.results_stream = f"{prefix}:stream:results"
        self.events_stream = f"{prefix}:stream:events"
        self.dead_letter_stream = f"{prefix}:stream:dead"
        # Index of jobs by creation time (sorted set, score = created ms).
        self.jobs_index = f"{prefix}:jobs"
        # arq's job queue for the dispatcher's deferred work.
        self.arq_queue = f"{prefix}:arq:queue"

    def model_stream(self, model: str) -> str:
        return f"{self.prefix}:stream:model:{model}"

    def job(self, job_id: str) -> str:
        """Hash: the job record (status, counts, usage, timestamps, metadata)."""
        return f"{self.prefix}:job:{job_id}"

    def job_requests(self, job_id: str) -> str:
        """Hash request_id -> 'r' (running) | 'd' (done): makes every result count exactly once."""
        return f"{self.prefix}:job:{job_id}:reqs"

    def job_results(self, job_id: str) -> str:
        """Stream of result lines in the order they finished; its entry ids are the results cursor."""
        return f"{self.prefix}:job:{job_id}:results"

    def job_keys(self, job_id: str) -> tuple[str, str, str]:
        return self.job(job_id), self.job_requests(job_id), self.job_results(job_id)
