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
WEBHOOK_GROUP = "webhooks"  # on the events stream: turns events into webhook deliveries

# Priority lanes, highest first: workers always read `interactive` before `batch`.
LANES = ("interactive", "batch")

# Stream entry field that carries the msgpack-encoded message. A lane-stream entry may carry
# several requests of one job (flow.batch_bundle): the first in PAYLOAD_FIELD, the next ones in
# PAYLOAD_FIELD + "1", "2"... (`lane_entry_payloads`).
PAYLOAD_FIELD = "d"
# Lane-stream field of a request split out of a bundle that was delivered before: how many times
# (a poison request is dead-lettered after max_deliveries in all, bundled or not).
DELIVERED_FIELD = "n"
# Ingest-stream field: how many of the chunk's first requests ingest already sent straight to their
# lane stream (absent: none); the router admits the rest.
SKIP_FIELD = "o"
# Results-stream fields of a request that ended without running: the request (msgpack) and why
# (`cancelled`, `expired`, `max_attempts_exceeded`). The collector turns it into a result line.
DROP_FIELD = "x"
REASON_FIELD = "r"
# Results-stream field of a workers' batch: a msgpack array of ResultRecord (shared/wire/messages.py),
# every result one publish call acknowledged, so the collector reads and parses one entry per batch.
BUNDLE_FIELD = "b"
# Field of the public events stream that carries one CloudEvents 1.0 JSON document; the entry also
# has `type` (e.g. job.completed) and `job` (the job id), so consumers can filter without parsing.
EVENT_FIELD = "event"
# Dead-letter stream field of the DeadLetter record (JSON) kept with the original message.
META_FIELD = "m"


class JobField:
    """Fields of a job's hash (`Keys.job`). Its request counts are fields named by request status
    (`succeeded`...), and per model by `model_field(model, status)`; `running` likewise."""

    ID = "id"
    STATUS = "status"
    PRIORITY = "priority"
    TENANT = "tenant"
    MODELS = "models"  # JSON list of the job's model names
    ROUTES = "routes"  # JSON list of the models its requests may reach: MODELS and their fallback chains
    METADATA = "metadata"
    TOTAL = "total"
    DONE = "done"  # requests with a final state
    RUNNING = "running"
    PROMPT_TOKENS = "prompt_tokens"
    COMPLETION_TOKENS = "completion_tokens"
    CREATED_MS = "created_ms"
    EXPIRES_MS = "expires_ms"
    STARTED_MS = "started_ms"
    STOP_MS = "stop_ms"  # when cancel or expiry began
    ENDED_MS = "ended_ms"
    # Set while a dead-letter requeue has reopened the job: when it had ended (ms). Its requests
    # hash then holds only the requeued requests (the rest finished before), and its next end is
    # given a later time, so each end's event id is new.
    REOPENED = "reopened"
    WEBHOOK = "webhook"
    WEBHOOK_REQUESTS = "wh_req"  # '1' when the job's own webhook wants request events
    DEADLINE_MS = "deadline_ms"  # when the job must be done by (absent: no deadline)
    ON_DEADLINE_RISK = "on_risk"  # best_effort | refuse | spill
    # The quote made when the job was accepted: its end (ms) and cost (micro-dollars), for the
    # quote errors GET /v1/models shows.
    QUOTED_END_MS = "q_end_ms"
    QUOTED_COST_MICROS = "q_cost_micros"
    # The planner's latest estimate of the job's end (ms, p50), whether its p90 is past the
    # deadline now ('1'/'0'), and when it first was (ms; the job.deadline_at_risk event went out then, once).
    ETA_MS = "eta_ms"
    AT_RISK = "at_risk"
    AT_RISK_MS = "risk_ms"


# Per-model job-hash count (`model_field(model, MOVED)`): requests of the job the fallback mover
# took off that model, for any reason; the planner counts them where they went.
MOVED = "moved"


class UsageField:
    """Job-hash fields of what a job's requests cost, written by the collector's script. Totals
    are plain fields; per serving model (the model that ran the requests, which may differ from
    the model they named when they moved along a fallback chain) they are `model_field(model,
    name)` fields, never sharing a name with the per-model request counts (keyed by the model a
    request named). Amounts are integers, so sums are exact."""

    BUSY_US = "busy_us"  # worker busy time charged, µs (total, and per serving model)
    COST_MICROS = "cost_micros"  # cost, micro-dollars (total, and per serving model)
    SERVED = "served"  # per serving model only: requests it ran


class SinkField:
    """Fields of a sink's hash (`Keys.sink`), written only by the script that moves its cursor
    (services/dispatcher/sinks/lua/advance.lua) and, for the error fields, by the sink's holder."""

    CURSOR = "cursor"  # the last events-stream entry handed over (or skipped by the sink's filter)
    SEEN = "seen"  # events-stream entries the cursor has passed, lost ones included
    DELIVERED = "delivered"  # events the sink acknowledged
    LOST = "lost"  # events trimmed from the stream before the sink read them
    REJECTED = "rejected"  # events the receiver refused as malformed (HTTP 400/422): skipped, counted
    DELIVERED_MS = "delivered_ms"  # when the cursor last moved past a delivered event
    ERROR = "error"  # the last failure to hand over, until the next success
    ERROR_MS = "error_ms"
    FAILING_SINCE_MS = "failing_since_ms"  # first failure of the current run of failures
    HOLDER = "holder"  # the dispatcher delivering to the sink


def model_field(model: str, name: str) -> str:
    """A job-hash count for one of its models (`name`: total, running or a request status)."""
    return f"m:{model}:{name}"


def contract_field(contract_id: str) -> str:
    """A job-hash field: one output contract (its canonical JSON) that requests of the job refer to."""
    return f"contract:{contract_id}"


def dead_letter_field(request_id: str) -> str:
    """Job-hash field: the result-line id of a request that failed into the dead letters."""
    return f"dl:{request_id}"


def spend_field(tenant: str, model: str) -> str:
    """Field of a period's spend hash (`Keys.spend`); tenant names have no spaces (`valid_tenant`,
    shared/core/settings.py)."""
    return f"{tenant} {model}"


def parse_spend(raw: dict[bytes, bytes]) -> dict[tuple[str, str], int]:
    """A period's spend hash as {(tenant, model): micro-dollars}."""
    out: dict[tuple[str, str], int] = {}
    for field, value in raw.items():
        tenant, _, model = field.decode().partition(" ")
        out[(tenant, model)] = int(value)
    return out


class AttemptField:
    """Fields of a webhook delivery's attempt hash (`Keys.webhook_attempt`)."""

    TOKEN = "token"  # the holder of the attempt: only it may start it and record its outcome
    STARTED = "started"  # ms: when the holder started sending
    LOST = "lost"  # comma-separated ms: attempts that started but whose sender never recorded an outcome


# Values of a job's requests hash (`Keys.job_requests`).
REQUEST_RUNNING = "r"
REQUEST_DONE = "d"
REQUEST_REQUEUED = "q"  # put back from the dead letters: runs and counts once more


class FlowField:
    """Fields of a model's flow hash (`Keys.flow`)."""

    UNFINISHED = "unfinished"  # accepted, no result yet
    PAUSED = "paused"  # '1' while the batch lane is over its high watermark


_PAYLOAD_BYTES = PAYLOAD_FIELD.encode()


def lane_entry_payloads(fields: dict[bytes, bytes]) -> list[bytes]:
    """The requests a lane-stream entry carries, in order (as redis-py reads its fields)."""
    first = fields.get(_PAYLOAD_BYTES)
    if first is None:
        return []
    out = [first]
    while (more := fields.get(b"%s%d" % (_PAYLOAD_BYTES, len(out)))) is not None:
        out.append(more)
    return out


def staged_field(lane: str) -> str:
    """Flow-hash field: the total length of the lane's staging queues."""
    return f"staged:{lane}"


def turn_field(lane: str) -> str:
    """Flow-hash field: the feed's turn count in the lane (whose turn goes to the earliest deadline)."""
    return f"turn:{lane}"


class Keys:
    """Key names for one prefix."""

    def __init__(self, prefix: str = "inferq") -> None:
        self.prefix = prefix
        # Streams.
        self.ingest_stream = f"{prefix}:stream:ingest"
        self.results_stream = f"{prefix}:stream:results"
        self.events_stream = f"{prefix}:stream:events"
        self.dead_letter_stream = f"{prefix}:stream:dead"
        # Dead letters dropped by retention (age or count), ever: a counter.
        self.dead_letters_dropped = f"{prefix}:dead:dropped"
        # Dead letters by owner, for listing: the last entry indexed (string), the tenants with an
        # index (set), and the index of entries that name no job or endpoint still known.
        self.dead_letters_indexed = f"{prefix}:dead:indexed"
        self.dead_letter_tenants = f"{prefix}:dead:tenants"
        self.dead_letters_unattributed = f"{prefix}:dead:unattributed"
        # Accepted-but-unfinished requests over all models (admission control).
        self.backlog_total = f"{prefix}:backlog"
        # Unfinished jobs by the end of their completion window (sorted set, score = ms).
        self.deadlines = f"{prefix}:deadlines"
        # Jobs being cancelled or expired (sorted set, score = when the stop began, ms); the
        # dispatcher drops their requests that no live worker will read, and forgets finished ones.
        self.stopping_jobs = f"{prefix}:jobs:stopping"
        # Index of jobs by creation time (sorted set, score = created ms).
        self.jobs_index = f"{prefix}:jobs"
        # Hash job id -> tenant of every job in `jobs_index`: once a job's record has expired, it
        # still names the tenant index (`tenant_jobs`) the job must leave.
        self.job_tenants = f"{prefix}:jobs:tenants"
        # Every scaling decision that changed a replica count (JSON in field `event`), capped.
        self.scaling_events = f"{prefix}:stream:scaling"
        # Which dispatcher runs the autoscaler (string with a short TTL, renewed each tick).
        self.scaler_leader = f"{prefix}:scaling:leader"
        # arq's job queue for the dispatcher's deferred work.
        self.arq_queue = f"{prefix}:arq:queue"
        # Written with a short TTL to learn whether Redis accepts writes (readiness, recovery).
        self.write_probe = f"{prefix}:probe"
        # The events the webhook fan-out reads: every job event, and request events only while some
        # endpoint subscribes to them (the set `webhook_request_subscribers` of such endpoint ids).
        self.webhook_events = f"{prefix}:stream:webhook-events"
        self.webhook_request_subscribers = f"{prefix}:webhooks:request-subscribers"
        # Events refused by the webhook events stream because it was at its bound, ever: a counter.
        self.webhook_events_dropped = f"{prefix}:webhooks:events-dropped"
        # API keys: one string per key, named by the key's SHA-256 (the key itself is never stored),
        # and an index of them by creation time.
        self.api_keys_index = f"{prefix}:apikeys"
        # Accepted-but-unfinished requests per tenant (hash tenant -> count), for the tenant limit.
        self.tenant_backlog = f"{prefix}:tenants:backlog"
        # Webhook deliveries waiting for their next attempt (sorted set, score = due ms).
        self.webhook_due = f"{prefix}:webhooks:due"
        # Counter: the token of each webhook attempt taken (unique, so a late sender is recognised).
        self.webhook_attempt_seq = f"{prefix}:webhooks:attempt-seq"
        # Hash model -> JSON ModelHealth (shared/models/health.py), written by the dispatcher each second.
        self.model_health = f"{prefix}:models:health"
        # String: JSON list of the spend limits reached now (shared/catalog/budgets.py), with a short TTL,
        # written by the dispatcher each second; ingest refuses or moves work they cover.
        self.budgets_reached = f"{prefix}:budgets:reached"
        # Hash `<from> <to> <reason>` -> requests moved along fallback chains, ever.
        self.fallback_moves = f"{prefix}:fallback:moves"
        # Hash model -> JSON StartPhases (shared/models/start_phases.py) of the model's latest worker start.
        self.start_phases = f"{prefix}:models:start-phases"

    def model_stream(self, model: str, lane: str) -> str:
        """What workers of `model` consume; the router keeps its backlog under the high watermark."""
        return f"{self.prefix}:stream:model:{model}:{lane}"

    def model_streams(self, model: str) -> list[str]:
        return [self.model_stream(model, lane) for lane in LANES]

    def spend(self, period: str, period_id: str) -> str:
        """Hash `<tenant> <serving model>` -> micro-dollars spent in one UTC day (`day`,
        2026-12-01) or month (`month`, 2026-12); expires a while after the period ends."""
        return f"{self.prefix}:spend:{period}:{period_id}"

    def heartbeat(self, consumer: str) -> str:
        """String with a short TTL that a stream consumer keeps alive while it runs: without it,
        the consumer's unacknowledged entries are taken over by a live peer."""
        return f"{self.prefix}:alive:{consumer}"

    def staging_queue(self, model: str, lane: str, job_id: str) -> str:
        """List of one job's requests for one model and lane, admitted but not yet routed."""
        return f"{self.prefix}:queue:{model}:{lane}:{job_id}"

    def staging_ring(self, model: str, lane: str) -> str:
        """List of the non-empty staging queues of a model and lane, served round-robin."""
        return f"{self.prefix}:ring:{model}:{lane}"

    @property
    def plans(self) -> str:
        """Hash model -> JSON ModelPlan (shared/planning/plan.py), written by the dispatcher each second."""
        return f"{self.prefix}:plan:models"

    @property
    def calibration(self) -> str:
        """Hash `<model>:<n>` -> decayed sums of the model's finished results (busy time, tokens,
        characters), written by the collector: what a plan's speed is fitted on."""
        return f"{self.prefix}:plan:calibration"

    def urgent_queues(self, model: str, lane: str) -> str:
        """Sorted set of the staging queues of a model and lane whose job has a deadline (score =
        the deadline, ms): the feed serves the earliest first, three turns in four."""
        return f"{self.prefix}:urgent:{model}:{lane}"

    def quote_errors(self, model: str) -> str:
        """List of JSON QuoteSample (newest first, at most 100): each finished job's quote against
        what happened, for the jobs that named the model."""
        return f"{self.prefix}:plan:errors:{model}"

    def flow(self, model: str) -> str:
        """Hash of a model's flow state: `unfinished` (accepted, no result yet), `staged:<lane>`
        (admitted, not yet routed), `paused` (1 while the batch lane is over its high watermark)."""
        return f"{self.prefix}:flow:{model}"

    def scaling_state(self, model: str) -> str:
        """Hash of a model's autoscaling state: backend, current, desired, reason, decided_ms."""
        return f"{self.prefix}:scaling:{model}"

    def modal_calls(self, model: str) -> str:
        """Hash call id -> spawned ns of the Modal worker runs the autoscaler started for a model."""
        return f"{self.prefix}:scaling:modal:{model}"

    def scaling_failures(self, model: str) -> str:
        """Hash of a scaling backend's failing calls for a model (a spawn without an answer, a worker
        that exits at once): count (consecutive), op, error, exit_status, at_ms, retry_ms; deleted
        once the failing call succeeds."""
        return f"{self.prefix}:scaling:failures:{model}"

    def local_workers(self, model: str) -> str:
        """Hash host:pid -> JSON (pid, host, start ticks, stopping) of the local worker processes
        the autoscaler started for a model, so the next leader on that host can adopt them."""
        return f"{self.prefix}:scaling:local:{model}"

    def model_stats(self, model: str) -> str:
        """Hash of a model's recent figures in fixed time buckets, fields `<bucket start s>:<name>`:
        results, failures and latency sums (the collector, once per batch), backlog and replicas
        (the dispatcher's sampler); read by GET /v1/model-stats (shared/models/stats.py)."""
        return f"{self.prefix}:stats:model:{model}"

    def file(self, file_id: str) -> str:
        """Hash of an uploaded file: `meta` (FileObject JSON) and `content` (the bytes)."""
        return f"{self.prefix}:file:{file_id}"

    def files_index(self, tenant: str) -> str:
        """Sorted set of a tenant's uploaded file ids by creation time."""
        return f"{self.prefix}:files:{tenant}"

    def file_usage(self, tenant: str) -> str:
        """Hash file id -> `<expires at, s> <bytes>` of a tenant's stored files: its file quota's
        accounting, pruned of expired files before each upload."""
        return f"{self.prefix}:files:{tenant}:usage"

    def batch(self, batch_id: str) -> str:
        """String: the OpenAI batch record (JSON); its state comes from the job it runs as."""
        return f"{self.prefix}:batch:{batch_id}"

    def batches_index(self, tenant: str) -> str:
        """Sorted set of a tenant's batch ids by creation time."""
        return f"{self.prefix}:batches:{tenant}"

    def api_key(self, key_sha256: str) -> str:
        """String: an API key's record (tenant, name, created), by the key's SHA-256 hex."""
        return f"{self.prefix}:apikey:{key_sha256}"

    def tenant_jobs(self, tenant: str) -> str:
        """Sorted set of a tenant's job ids by creation time (score = created ms): what
        GET /v1/jobs pages through, so a tenant's listing never reads another tenant's jobs."""
        return f"{self.prefix}:tenant:{tenant}:jobs"

    def rate_bucket(self, tenant: str) -> str:
        """Hash of a tenant's request-rate token bucket (tokens, updated ms)."""
        return f"{self.prefix}:tenant:{tenant}:rate"

    def dead_letter_index(self, tenant: str) -> str:
        """Sorted set of a tenant's dead letters (score = ms of the entry id, member = the id padded
        so that member order is entry order), trimmed with the dead-letter stream."""
        return f"{self.prefix}:dead:tenant:{tenant}"

    def sink(self, name: str) -> str:
        """Hash of an event sink's cursor on the events stream and its counters (`SinkField`)."""
        return f"{self.prefix}:sink:{name}"

    def sink_lease(self, name: str) -> str:
        """String with a short TTL: which dispatcher delivers to the sink (one at a time, in order)."""
        return f"{self.prefix}:sink:{name}:lease"

    def webhook(self, endpoint_id: str) -> str:
        """String: a webhook endpoint (JSON, with its signing secrets)."""
        return f"{self.prefix}:webhook:{endpoint_id}"

    def webhooks_index(self, tenant: str) -> str:
        """Sorted set of a tenant's webhook endpoint ids by creation time."""
        return f"{self.prefix}:webhooks:{tenant}"

    def webhooks_version(self, tenant: str) -> str:
        """Counter bumped by every change to a tenant's endpoints: readers reload when it moves."""
        return f"{self.prefix}:webhooks:{tenant}:version"

    def webhook_delivery(self, delivery_id: str) -> str:
        """String: one webhook delivery (JSON: event payload, status, attempts)."""
        return f"{self.prefix}:whdelivery:{delivery_id}"

    def webhook_attempt(self, delivery_id: str) -> str:
        """Hash (`AttemptField`): the attempt of a delivery that is taken or in flight, and attempts
        whose sender died; deleted when an attempt's outcome is recorded."""
        return f"{self.prefix}:whdelivery:{delivery_id}:attempt"

    def webhook_sending(self, endpoint_id: str) -> str:
        """Sorted set of the deliveries with an attempt in flight to an endpoint, score = end of the
        attempt's lease: what the per-endpoint concurrency limit counts (expired leases do not)."""
        return f"{self.prefix}:webhook:{endpoint_id}:sending"

    def webhook_deliveries(self, endpoint_id: str) -> str:
        """Sorted set of an endpoint's delivery ids by creation time."""
        return f"{self.prefix}:webhook:{endpoint_id}:deliveries"

    def job(self, job_id: str) -> str:
        """Hash: the job record (status, counts, usage, timestamps, metadata)."""
        return f"{self.prefix}:job:{job_id}"

    def job_requests(self, job_id: str) -> str:
        """Hash request_id -> 'r' (running) | 'd' (done): makes every result count exactly once."""
        return f"{self.prefix}:job:{job_id}:reqs"

    def job_results(self, job_id: str) -> str:
        """Stream of result lines in the order they finished; its entry ids are the results cursor."""
        return f"{self.prefix}:job:{job_id}:results"

    def idempotency(self, tenant: str, key: str) -> str:
        """String `job_id:body_sha256` for 24 h: the same Idempotency-Key returns the same job."""
        return f"{self.prefix}:idem:{tenant}:{key}"

    def job_keys(self, job_id: str) -> tuple[str, str, str]:
        return self.job(job_id), self.job_requests(job_id), self.job_results(job_id)
