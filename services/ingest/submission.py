"""Turn a POST /v1/jobs body into a job ready to write, or a client error naming the field."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence

import msgspec

from services.ingest.budget_check import BudgetRoutes
from services.ingest.contract_check import ContractRefused, check
from services.ingest.errors.client import ApiException, decode_body
from shared.catalog.fallback import cannot_enforce, reachable
from shared.catalog.models import ModelConfig, ModelsConfig
from shared.core.ids import new_job_id, request_id
from shared.core.settings import Settings
from shared.jobs.store import NO_LIMIT, JobStore
from shared.redis.keys import JobField, contract_field
from shared.wire import contract as contracts
from shared.wire.api import JobCreate, JobWebhook, Priority, PromptSpec, RequestSpec
from shared.wire.formats import ResponseFormat
from shared.wire.messages import DirectChunk, InferenceRequest, IngestChunk, SamplingParams

CHUNK_SIZE = 500  # requests per ingest-stream entry

_decoder = msgspec.json.Decoder(JobCreate)
_encoder = msgspec.msgpack.Encoder()


class Demand(msgspec.Struct, kw_only=True):
    """What a job asks of one model, for its quote: requests, their prompt characters and texts,
    and their max_tokens."""

    requests: int = 0
    prompt_chars: int = 0
    max_tokens: int = 0
    texts: list[str] = []  # the prompts (a chat: its messages' contents), for a tokenizer to count


class JobPlan(msgspec.Struct, kw_only=True):
    job_id: str
    created_ms: int
    expires_ms: int
    priority: Priority
    model_totals: dict[str, int]
    metadata: dict[str, str]
    chunks: list[bytes | DirectChunk]
    webhook: JobWebhook | None = None
    routes: list[str] = []  # the models its requests may reach (shared/catalog/fallback.py)
    contracts: dict[str, bytes] = {}  # id -> encoded contract, each stored once in the job's hash
    deadline_ms: int = 0  # 0: none
    on_deadline_risk: str = "best_effort"
    demand: dict[str, Demand] = {}  # per model it names


def plan_job(
    body: bytes,
    models: ModelsConfig,
    max_requests: int,
    max_prompt_chars: int = 200_000,
    budgets: BudgetRoutes | None = None,
) -> JobPlan:
    """Check the body and encode its requests for the ingest stream. With `budgets`, requests for
    a model a reached spend limit covers are written to the next model of its chain instead."""
    doc = decode_body(_decoder, body)
    items, field = _items(doc, max_requests)
    job_id = new_job_id()
    created_ms = int(time.time() * 1000)
    seen: dict[str, int] = {}  # custom_id -> the index that used it first
    encoded: list[tuple[str, str, bytes]] = []
    terms = _Contracts(doc.response_format, field, models)
    expires_ms = created_ms + _window_ms(doc.completion_window)
    deadline = _deadline_ms(doc, created_ms, expires_ms)
    demand: dict[str, Demand] = {}
    for i, item in enumerate(items):
        where = f"{field}[{i}]"
        model = _model_of(item, where, i, models)
        prompt, messages, custom_id = _content_within(item, where, i, max_prompt_chars)
        rid = request_id(job_id, i)
        custom_id = rid if custom_id is None else _unique_custom_id(custom_id, where, i, seen, field)
        seen[custom_id] = i
        max_tokens = _max_tokens(item, model, where, i)
        lane = item.priority or doc.priority
        req = InferenceRequest(
            request_id=rid,
            job_id=job_id,
            custom_id=custom_id,
            model=item.model,
            accepted_ms=created_ms,
            prompt=prompt,
            messages=messages,
            params=_sampling(item, max_tokens),
            max_queue_wait_ms=max_queue_wait_ms(item.max_queue_wait, doc.max_queue_wait, lane, model),
            contract=terms.of(item, where, i),
        )
        encoded.append(_encoded(req, lane, budgets))
        _add_demand(demand, req)
    model_totals = {m: d.requests for m, d in demand.items()}
    _check_backlogs(model_totals, models, field)
    return JobPlan(
        job_id=job_id,
        created_ms=created_ms,
        expires_ms=expires_ms,
        priority=doc.priority,
        model_totals=model_totals,
        metadata=doc.metadata,
        chunks=_chunks(job_id, encoded, models, deadline),
        webhook=doc.webhook,
        routes=reachable(models, {model for model, _, _ in encoded} | set(model_totals)),
        contracts=terms.stored,
        deadline_ms=deadline,
        on_deadline_risk=doc.on_deadline_risk if deadline else "best_effort",
        demand=demand,
    )


def _add_demand(demand: dict[str, Demand], req: InferenceRequest) -> None:
    d = demand.get(req.model)
    if d is None:
        d = demand[req.model] = Demand(texts=[])
    text = req.prompt if req.prompt is not None else "\n".join(m.content for m in req.messages or ())
    d.requests += 1
    d.prompt_chars += len(text)
    d.max_tokens += req.params.max_tokens
    d.texts.append(text)


def _deadline_ms(doc: JobCreate, created_ms: int, expires_ms: int) -> int:
    """The job's deadline in ms (0: none): after now, and within its completion window."""
    if doc.deadline is None:
        if doc.on_deadline_risk != "best_effort":
            raise ApiException(
                422,
                f"on_deadline_risk: {doc.on_deadline_risk!r} needs a `deadline`",
                field="on_deadline_risk",
            )
        return 0
    d = doc.deadline
    ms = d * 1000 if isinstance(d, int) else int(d.timestamp() * 1000)
    if ms <= created_ms:
        raise ApiException(
            422, f"deadline: {_shown(ms)} has already passed (now {_shown(created_ms)})", field="deadline"
        )
    if ms > expires_ms:
        raise ApiException(
            422,
            f"deadline: {_shown(ms)} is after the end of the completion window ({_shown(expires_ms)}), when the"
            " unfinished requests expire; give a longer completion_window or an earlier deadline",
            field="deadline",
        )
    return ms


def _shown(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class _Contracts:
    """The output contracts of a job's requests: each request's own response_format, else the
    job's; each checked once, and stored once however many requests share it."""

    def __init__(self, job_format: ResponseFormat | None, field: str, models: ModelsConfig) -> None:
        self.models = models
        self.stored: dict[str, bytes] = {}
        self._job_id: str | None = None
        self._kinds: dict[str, str] = {}  # contract id -> its kind
        self._served: dict[tuple[str, str], str | None] = {}  # (model, kind) -> a route that cannot
        if job_format is not None:
            self._job_id = self._checked(job_format, "response_format", None)

    def of(self, item: RequestSpec | PromptSpec, where: str, i: int) -> str | None:
        own = item.response_format
        cid = self._job_id if own is None else self._checked(own, f"{where}.response_format", i)
        if cid is not None:
            field = f"{where}.response_format" if own is not None else "response_format"
            self._check_model(item.model, field, i, self._kinds[cid])
        return cid

    def _checked(self, fmt: ResponseFormat, field: str, i: int | None) -> str | None:
        contract = contracts.contract_of(fmt)
        if contract is None:
            return None
        encoded = contracts.encode(contract)
        cid = contracts.contract_id(encoded)
        if cid in self.stored:  # the same contract as an earlier request's: checked then
            return cid
        try:
            check(contract)
        except ContractRefused as exc:
            where = f"{field}.{exc.path}"
            raise ApiException(422, f"{where}: {exc.message}", field=where, index=i) from None
        except Exception as exc:  # a checker's own failure on strange input is the input's fault, not a 500
            message = f"{field}: cannot be checked ({type(exc).__name__}: {exc})"
            raise ApiException(422, message[:1000], field=field, index=i) from None
        self.stored[cid] = encoded
        self._kinds[cid] = contract.kind
        return cid

    def _check_model(self, model: str, field: str, i: int, kind: str) -> None:
        if (model, kind) not in self._served:
            self._served[model, kind] = cannot_enforce(self.models, model, kind)
        blocker = self._served[model, kind]
        if blocker is None:
            return
        engine = self.models.models[blocker].engine
        how = "its engine" if blocker == model else f"its fallback chain reaches {blocker!r}, whose engine"
        raise ApiException(
            422,
            f"{field}: model {model!r} cannot hold outputs to a {kind!r} response_format: {how} ({engine})"
            " cannot (GET /v1/models shows each model's response_formats)",
            field=field,
            index=i,
            model=model,
        )


def _model_of(item: RequestSpec | PromptSpec, where: str, i: int, models: ModelsConfig) -> ModelConfig:
    model = models.get(item.model)
    if model is None:
        raise ApiException(
            422,
            f"{where}.model: unknown model {item.model!r}; known models: {', '.join(models.names())}",
            type="model_not_found",
            field=f"{where}.model",
            index=i,
            known_models=models.names(),
        )
    return model


def _content_within(item: RequestSpec | PromptSpec, where: str, i: int, max_prompt_chars: int):
    """(prompt, messages, custom_id) of one request, its size checked against the limit."""
    prompt, messages, custom_id = _content(item, where, i)
    size = len(prompt) if prompt is not None else sum(len(m.content) for m in messages or ())
    if size > max_prompt_chars:
        what = "prompt" if prompt is not None else "messages"
        raise ApiException(
            422,
            f"{where}.{what}: {size} characters, more than the limit of {max_prompt_chars} per request",
            type="prompt_too_long",
            field=f"{where}.{what}",
            index=i,
        )
    return prompt, messages, custom_id


def _max_tokens(item: RequestSpec | PromptSpec, model: ModelConfig, where: str, i: int) -> int:
    max_tokens = item.max_tokens or model.default_max_tokens
    if max_tokens > model.max_tokens_limit:
        raise ApiException(
            422,
            f"{where}.max_tokens: {max_tokens} exceeds the limit of {model.max_tokens_limit} for model {item.model!r}",
            field=f"{where}.max_tokens",
            index=i,
        )
    return max_tokens


def _sampling(item: RequestSpec | PromptSpec, max_tokens: int) -> SamplingParams:
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=item.temperature,
        top_p=item.top_p,
        stop=[item.stop] if isinstance(item.stop, str) else item.stop,
        seed=item.seed,
    )


def _unique_custom_id(custom_id: str, where: str, i: int, seen: dict[str, int], field: str) -> str:
    if custom_id in seen:
        raise ApiException(
            422,
            f"{where}.custom_id: duplicate custom_id {custom_id!r} (also used by {field}[{seen[custom_id]}]); "
            "custom_id must be unique within a job",
            field=f"{where}.custom_id",
            index=i,
        )
    return custom_id


def _encoded(req: InferenceRequest, lane: str, budgets: BudgetRoutes | None) -> tuple[str, str, bytes]:
    """(model stream, lane, payload): to its own model, or where a reached spend limit sends it."""
    target = budgets.target(req.model) if budgets is not None else None
    if target is None:
        return req.model, lane, _encoder.encode(req)
    return target, lane, _encoder.encode(("budget_exceeded", req))  # as the fallback mover would move it


def _check_backlogs(model_totals: dict[str, int], models: ModelsConfig, field: str) -> None:
    for name, n in model_totals.items():
        limit = models.models[name].flow.max_backlog
        if n > limit:
            raise ApiException(
                413,
                f"{field}: the job has {n} requests for model {name!r},"
                f" more than its backlog limit of {limit}; split it",
                type="request_too_large",
                field=field,
            )


def _chunks(
    job_id: str, encoded: list[tuple[str, str, bytes]], models: ModelsConfig, deadline_ms: int = 0
) -> list[bytes | DirectChunk]:
    """The job's ingest chunks, one (model, lane) each, in request order within it. The first
    chunks of each, up to its high watermark, may go straight to the lane stream when the job is
    created (no more could: flow control never lets a lane stream hold more)."""
    groups: dict[tuple[str, str], list[tuple[str, str, bytes]]] = {}
    for item in encoded:
        groups.setdefault((item[0], item[1]), []).append(item)
    out: list[bytes | DirectChunk] = []
    for (model, lane), items in groups.items():
        config = models.models[model]
        high = config.high_watermark  # in requests: bundles let more fit, but the script stays short
        for i in range(0, len(items), CHUNK_SIZE):
            part = items[i : i + CHUNK_SIZE]
            chunk = _encoder.encode(IngestChunk(job_id, part, deadline_ms))
            if i >= high:
                out.append(chunk)
                continue
            out.append(
                DirectChunk(
                    chunk=chunk,
                    model=model,
                    lane=lane,
                    payloads=[p for _, _, p in part],
                    high_watermark=config.high_watermark,
                    low_watermark=config.low_watermark,
                    batch_bundle=config.flow.batch_bundle,
                )
            )
    return out


def max_queue_wait_ms(own: float | None, job: float | None, lane: str, model: ModelConfig) -> int | None:
    """The request's own max_queue_wait, else the job's, else (interactive only) its model's default."""
    seconds = own if own is not None else job
    if seconds is None and lane == "interactive":
        seconds = model.interactive_max_queue_wait_s
    return None if seconds is None else max(1, round(seconds * 1000))


_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
MAX_WINDOW_MS = 7 * 86_400_000


async def create_planned(
    jobs: JobStore, plan: JobPlan, settings: Settings, model_limits: dict[str, int], tenant: str, **options
) -> str:
    """Write a planned job under the service's limits (every model's backlog, the global backlog,
    the tenant's queued cap); `options` are JobStore.create's own (idempotency, extra fields).
    Returns the job's id: another one when an idempotency key replays an earlier job."""
    extra = dict(options.pop("extra", None) or {})
    if plan.deadline_ms:
        extra[JobField.DEADLINE_MS] = str(plan.deadline_ms)
        extra[JobField.ON_DEADLINE_RISK] = plan.on_deadline_risk
    if plan.routes:
        extra[JobField.ROUTES] = msgspec.json.encode(plan.routes).decode()
    for cid, encoded in plan.contracts.items():
        extra[contract_field(cid)] = encoded.decode()
    return await jobs.create(
        plan.job_id,
        plan.created_ms,
        plan.model_totals,
        plan.metadata,
        plan.chunks,
        priority=plan.priority,
        expires_ms=plan.expires_ms,
        model_limits=model_limits,
        global_limit=settings.max_backlog,
        tenant=tenant,
        tenant_limit=settings.tenant_max_queued or NO_LIMIT,
        extra=extra,
        **options,
    )


def _window_ms(window: str) -> int:
    ms = int(window[:-1]) * _UNIT_MS[window[-1]]
    if ms > MAX_WINDOW_MS:
        raise ApiException(
            422, f"completion_window: {window!r} is longer than the maximum of 7d", field="completion_window"
        )
    return ms


def _items(doc: JobCreate, max_requests: int) -> tuple[Sequence[RequestSpec | PromptSpec], str]:
    if doc.requests is not None and doc.prompts is not None:
        raise ApiException(422, "requests: give either `requests` or `prompts`, not both", field="requests")
    if doc.requests is None and doc.prompts is None:
        raise ApiException(
            422, "requests: the body must contain a `requests` list (or a `prompts` list)", field="requests"
        )
    field = "requests" if doc.requests is not None else "prompts"
    items = doc.requests if doc.requests is not None else doc.prompts
    if not items:
        raise ApiException(422, f"{field}: must contain at least one request", field=field)
    if len(items) > max_requests:
        raise ApiException(
            413,
            f"{field}: the job has {len(items)} requests; the limit is {max_requests} per job",
            type="request_too_large",
            field=field,
        )
    return items, field


def _content(item: RequestSpec | PromptSpec, where: str, i: int):
    if isinstance(item, PromptSpec):
        return item.prompt, None, item.id
    if (item.prompt is None) == (item.messages is None):
        both = item.prompt is not None
        raise ApiException(
            422,
            f"{where}.prompt: give exactly one of `prompt` or `messages`" + (", not both" if both else ""),
            field=f"{where}.prompt",
            index=i,
        )
    return item.prompt, item.messages, item.custom_id
