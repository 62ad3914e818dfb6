"""The models file: which models exist, which engine serves each, and how they scale.

```toml
[models.echo-small]
engine = "dummy"
max_inflight = 64
[models.echo-small.options]
latency_ms = 20
```
A malformed file stops every service at start with a message naming the file and the entry.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

from shared.catalog.budgets import PERIODS, Budget, Limit, TenantConfig
from shared.catalog.sinks import SinkConfig, parse_sinks
from shared.core.errors import ModelsFileError, describe_validation

MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$")


class DummyOptions(Struct, forbid_unknown_fields=True, kw_only=True):
    """Options of the `dummy` engine, a simulator for pipeline tests and benchmarks."""

    latency_ms: Annotated[float, Meta(ge=0)] = 0.0
    ms_per_token: Annotated[float, Meta(ge=0)] = 0.0
    # Share of requests that fail with `simulated_failure`, chosen by request id (reproducible).
    failure_rate: Annotated[float, Meta(ge=0, le=1)] = 0.0
    # Requests whose text contains this always fail with a retryable error (a poison request).
    poison_text: str = ""
    # Requests whose text contains this kill the worker process, as a GPU fault would.
    crash_text: str = ""
    # Every request fails with a retryable error on its first N attempts in a worker (a flaky backend).
    flaky_attempts: Annotated[int, Meta(ge=0)] = 0
    # A file each run appends `<pid> <request id>` to as it starts, to count runs per request ("" = none).
    runs_log: str = ""


class TransformersOptions(Struct, forbid_unknown_fields=True, kw_only=True):
    """Options of the `transformers` engine: a Hugging Face causal LM on this machine's CPU or GPU."""

    model: Annotated[str, Meta(min_length=1)]  # a Hugging Face id or a local directory
    revision: str | None = None
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    # Requests gathered into one generate() call, and how long the first one waits for company.
    max_batch_size: Annotated[int, Meta(ge=1, le=1024)] = 8
    batch_wait_ms: Annotated[float, Meta(ge=0, le=10_000)] = 10.0
    threads: Annotated[int, Meta(ge=0)] = 0  # torch intra-op threads on CPU; 0 = torch's default
    local_files_only: bool = False  # never reach the Hugging Face hub
    trust_remote_code: bool = False


class OpenAIOptions(Struct, forbid_unknown_fields=True, kw_only=True):
    """Options of the `openai` engine: any OpenAI-compatible HTTP endpoint (vllm serve, Ollama,
    llama.cpp server, a hosted API)."""

    base_url: Annotated[str, Meta(pattern=r"^https?://")]  # e.g. http://localhost:8001/v1
    model: str = ""  # the upstream model name; empty = the public name
    api_key_env: str = ""  # name of the environment variable holding the API key (never the key)
    api: Literal["auto", "chat", "completions"] = "auto"  # auto: chat for `messages`, completions for `prompt`
    max_concurrency: Annotated[int, Meta(ge=1, le=4096)] = 16
    timeout_s: Annotated[float, Meta(gt=0)] = 120.0
    connect_timeout_s: Annotated[float, Meta(gt=0)] = 10.0
    # Retries inside the engine on 408/409/429/5xx and connection errors, honouring Retry-After.
    max_retries: Annotated[int, Meta(ge=0, le=20)] = 3
    backoff_s: Annotated[float, Meta(ge=0)] = 0.5
    backoff_max_s: Annotated[float, Meta(ge=0)] = 30.0
    headers: dict[str, str] = {}


class VllmOptions(Struct, forbid_unknown_fields=True, kw_only=True):
    """Options of the `vllm` engine: vLLM's AsyncLLM in the worker process, on its GPU(s).

    The fields below are checked wherever the models file is read; any other entry of the table is
    an `AsyncEngineArgs` field passed through as is (`kv_cache_dtype`, `max_num_batched_tokens`,
    `speculative_config`, ...), checked against vLLM's own list when the worker starts."""

    model: Annotated[str, Meta(min_length=1)]
    revision: str | None = None
    tokenizer: str | None = None
    dtype: str = "auto"
    max_model_len: Annotated[int, Meta(ge=1)] | None = None
    gpu_memory_utilization: Annotated[float, Meta(gt=0, le=1)] = 0.90
    tensor_parallel_size: Annotated[int, Meta(ge=1)] = 1
    max_num_seqs: Annotated[int, Meta(ge=1)] | None = None
    enable_prefix_caching: bool = True
    enforce_eager: bool = False
    quantization: str | None = None
    trust_remote_code: bool = False
    engine_args: dict[str, Any] = {}  # every other entry of the table

    @classmethod
    def from_table(cls, table: dict[str, Any]) -> VllmOptions:
        fields = set(cls.__struct_fields__) - {"engine_args"}
        known = {k: v for k, v in table.items() if k in fields}
        rest = {k: v for k, v in table.items() if k not in fields}
        return msgspec.convert({**known, "engine_args": rest}, cls)


ENGINE_OPTIONS: dict[str, type[Struct]] = {
    "dummy": DummyOptions,
    "transformers": TransformersOptions,
    "openai": OpenAIOptions,
    "vllm": VllmOptions,
}


class ModalConfig(Struct, forbid_unknown_fields=True, kw_only=True):
    """How the model's GPU workers run on Modal (`services/inference/modal_app.py`). A model with
    this table gets a deployed Modal class, and the `modal` scaling backend drives it by default.

    `min_containers` keeps containers up, but only runs the dispatcher spawns serve work, so it may
    not exceed `scaling.min_replicas` (the runs kept going at all times)."""

    gpu: str = "L4"  # a Modal GPU spec: "T4", "L4", "A10G", "L40S", "A100-80GB", "H100", "H100:2", ...
    min_containers: Annotated[int, Meta(ge=0)] = 0
    max_containers: Annotated[int, Meta(ge=1)] | None = None  # None: scaling.max_replicas
    scaledown_window_s: Annotated[int, Meta(ge=2, le=3600)] = 300
    timeout_s: Annotated[int, Meta(ge=10, le=86_400)] = 86_400  # one container's lifetime cap
    startup_timeout_s: Annotated[int, Meta(ge=10, le=86_400)] = 1200  # model download and load
    # Cold starts (docs/modal.md): a CPU memory snapshot restores the worker's imports instead of
    # re-running them; a GPU snapshot (Modal alpha, `vllm` engine) restores the loaded engine too,
    # put to sleep before the snapshot and woken in each new container.
    memory_snapshot: bool = False
    gpu_snapshot: bool = False


class ScalingConfig(Struct, forbid_unknown_fields=True, kw_only=True):
    """How many workers serve the model, decided each second from its backlog.

    desired = clamp(ceil(backlog / target_per_replica), min_replicas, max_replicas). From zero, a
    backlog of at least `activation_backlog` starts the first worker. Scaling up happens at once;
    scaling down takes the highest recommendation of the last `scale_down_window_s` (no flapping);
    the last worker stops only after the backlog has been zero for `idle_cooldown_s`.
    `backend`: `static` (a fixed fleet started by the operator: nothing changes), `local` (worker
    processes on the dispatcher's machine), `modal` (the deployed Modal class). Unset, it is `modal`
    for a model with a `[models.NAME.modal]` table and `static` otherwise; reading the file settles
    it, so everything else reads one value.
    """

    backend: Literal["static", "local", "modal"] | None = None
    min_replicas: Annotated[int, Meta(ge=0)] = 0
    max_replicas: Annotated[int, Meta(ge=1)] = 1
    target_per_replica: Annotated[int, Meta(ge=1)] = 256
    activation_backlog: Annotated[int, Meta(ge=1)] = 1
    scale_down_window_s: Annotated[float, Meta(ge=0)] = 30.0
    idle_cooldown_s: Annotated[float, Meta(ge=0)] = 60.0


class FlowConfig(Struct, forbid_unknown_fields=True, kw_only=True):
    """Backpressure and admission for one model.

    The router stops feeding the model's batch lane when its stream backlog (unread + unacknowledged)
    reaches `high_watermark` and resumes below `low_watermark`; 0 means automatic: twice what the
    model's workers can hold at once (max_inflight x max(1, scaling.max_replicas)), at least 64, and
    half of that. `max_backlog` caps accepted-but-unfinished requests: a submission that would
    exceed it is answered 429. `quantum` is how many requests one job routes per round-robin turn.

    `batch_bundle` > 1 puts up to that many requests of one job in each batch-lane entry (the
    interactive lane keeps one per entry): Redis then writes, delivers and acknowledges one entry
    for them all, which is most of its per-request work in the lane. The price: a worker publishes
    an entry's results once all of them are done, each holding its slot until then; it reads the
    batch lane only with `batch_bundle` slots free; and the watermarks count entries, so the batch
    lane may hold up to `batch_bundle` times as many requests.
    """

    high_watermark: Annotated[int, Meta(ge=0)] = 0
    low_watermark: Annotated[int, Meta(ge=0)] = 0
    max_backlog: Annotated[int, Meta(ge=1)] = 1_000_000
    quantum: Annotated[int, Meta(ge=1, le=10_000)] = 32
    batch_bundle: Annotated[int, Meta(ge=1, le=256)] = 1


class RetryConfig(Struct, forbid_unknown_fields=True, kw_only=True):
    """Retryable engine errors are retried with exponential backoff (backoff_s, doubling, capped
    at backoff_max_s) until `max_attempts` attempts; then the request is dead-lettered and fails
    with `max_attempts_exceeded`. Permanent errors fail the request at once."""

    max_attempts: Annotated[int, Meta(ge=1, le=100)] = 3
    backoff_s: Annotated[float, Meta(ge=0)] = 1.0
    backoff_max_s: Annotated[float, Meta(ge=0)] = 30.0


# Requests one worker keeps inside its engine when the models file says nothing. vLLM schedules
# its own batches (up to max_num_seqs) from what it holds: feeding it a trickle as slots free up
# costs a third of its throughput, while a request waiting inside vLLM costs only host memory.
DEFAULT_MAX_INFLIGHT = {"vllm": 2048}
# The response_format kinds each engine holds outputs to: vllm and transformers constrain decoding
# with a grammar; openai passes the JSON kinds on as OpenAI's `response_format` (OpenAI's API has
# no regex or choice). The worker validates every contracted result either way.
ALL_CONTRACT_KINDS = frozenset({"json_object", "json_schema", "regex", "choice"})
CONTRACT_KINDS: dict[str, frozenset[str]] = {
    "vllm": ALL_CONTRACT_KINDS,
    "transformers": ALL_CONTRACT_KINDS,
    "openai": frozenset({"json_object", "json_schema"}),
}
FALLBACK_MAX_INFLIGHT = 32


class ModelConfig(Struct, forbid_unknown_fields=True, kw_only=True):
    engine: str
    options: dict[str, Any] = {}
    max_inflight: Annotated[int, Meta(ge=1, le=4096)] | None = None  # None: the engine's default
    default_max_tokens: Annotated[int, Meta(ge=1)] = 256
    max_tokens_limit: Annotated[int, Meta(ge=1)] = 32768
    reclaim_idle_s: Annotated[float, Meta(gt=0)] = 300.0
    # Deliveries of one request (first read + reclaims after a worker died) before it is dead-lettered.
    max_deliveries: Annotated[int, Meta(ge=1, le=100)] = 5
    # One engine attempt longer than this fails the request with `request_timeout`.
    request_timeout_s: Annotated[float, Meta(gt=0)] = 600.0
    retry: RetryConfig = msgspec.field(default_factory=RetryConfig)
    description: str = ""
    scaling: ScalingConfig = msgspec.field(default_factory=ScalingConfig)
    modal: ModalConfig | None = None  # None: no Modal class is deployed for this model
    flow: FlowConfig = msgspec.field(default_factory=FlowConfig)
    # Models its requests move to, in order, when it cannot serve them (shared/catalog/fallback.py): no
    # worker has read its stream for `unavailable_after_s` while work waits, or its backend's starts
    # keep failing; a request's expected wait exceeds its max_queue_wait; every attempt failed with
    # a retryable error; a spend limit covering it is reached. Empty: requests wait for this model.
    fallback: list[str] = []
    unavailable_after_s: Annotated[float, Meta(ge=1, le=86_400)] = 60.0
    # max_queue_wait of interactive requests that set none (seconds); None: they wait.
    interactive_max_queue_wait_s: Annotated[float, Meta(gt=0, le=86_400)] | None = None
    # USD per busy hour of one replica (default for a Modal model: its GPU's list price,
    # shared/catalog/pricing.py), and USD per million tokens (prompt + completion), for hosted APIs.
    price_per_hour: Annotated[float, Meta(ge=0)] | None = None
    price_per_million_tokens: Annotated[float, Meta(ge=0)] | None = None
    budget: Budget | None = None  # spend limits of this model, every tenant together
    name: str = ""  # filled from the table key

    def __post_init__(self) -> None:
        if self.max_inflight is None:
            self.max_inflight = DEFAULT_MAX_INFLIGHT.get(self.engine, FALLBACK_MAX_INFLIGHT)
        if self.flow.batch_bundle > self.max_inflight:
            raise ValueError(
                f"flow.batch_bundle ({self.flow.batch_bundle}) exceeds max_inflight ({self.max_inflight}):"
                " a worker could never read a batch-lane entry"
            )
        if self.scaling.backend is None:
            self.scaling.backend = "static" if self.modal is None else "modal"

    @property
    def contract_kinds(self) -> frozenset[str]:
        """The response_format kinds its engine can hold an output to (none: only free text)."""
        return CONTRACT_KINDS.get(self.engine, frozenset())

    @property
    def modal_max_containers(self) -> int | None:
        """The deployed class's container cap; None when the model is not deployed on Modal."""
        if self.modal is None:
            return None
        return self.modal.max_containers or self.scaling.max_replicas

    @property
    def high_watermark(self) -> int:
        assert self.max_inflight is not None  # resolved by __post_init__
        return self.flow.high_watermark or max(64, 2 * self.max_inflight * max(1, self.scaling.max_replicas))

    @property
    def low_watermark(self) -> int:
        return self.flow.low_watermark or self.high_watermark // 2

    def engine_options(self) -> Struct:
        if self.engine == "vllm":
            return VllmOptions.from_table(self.options)
        return msgspec.convert(self.options, ENGINE_OPTIONS[self.engine])


class ModelsConfig(Struct, kw_only=True):
    models: dict[str, ModelConfig]
    path: str = ""
    tenants: dict[str, TenantConfig] = {}  # per-tenant settings: spend limits
    sinks: dict[str, SinkConfig] = {}  # where the events go besides the events stream and webhooks

    def names(self) -> list[str]:
        return sorted(self.models)

    def get(self, name: str) -> ModelConfig | None:
        return self.models.get(name)

    def spend_limits(self) -> list[Limit]:
        """Every spend limit the file sets: each model's, then each tenant's, per period."""
        out: list[Limit] = []
        for name, cfg in sorted(self.models.items()):
            for period in PERIODS:
                usd = cfg.budget.limit(period) if cfg.budget else None
                if usd is not None:
                    out.append(Limit(tenant=None, models=(name,), period=period, usd=usd))
        for tenant, tcfg in sorted(self.tenants.items()):
            for period in PERIODS:
                usd = tcfg.budget.limit(period) if tcfg.budget else None
                if usd is not None:
                    assert tcfg.budget is not None
                    out.append(Limit(tenant=tenant, models=tuple(tcfg.budget.models), period=period, usd=usd))
        return out


def modal_class_name(model: str) -> str:
    """The Python identifier of a model's deployed Modal class (`meta-llama/Llama-3.1-8B` ->
    `Worker_meta_llama_Llama_3_1_8B`): the deployment defines it, the autoscaler looks it up."""
    return "Worker_" + re.sub(r"\W", "_", model)


def parse_models(text: str, source: str = "<models>") -> ModelsConfig:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ModelsFileError(f"models file {source}: not valid TOML: {exc}") from None
    unknown = sorted(set(doc) - {"models", "tenants", "sinks"})
    if unknown:
        raise ModelsFileError(
            f"models file {source}: unknown top-level key(s) {unknown}; expected [models.NAME], "
            f"[tenants.NAME] and [sinks.NAME] tables"
        )
    table = doc.get("models")
    if not isinstance(table, dict) or not table:
        raise ModelsFileError(f"models file {source}: no models defined; add at least one [models.NAME] table")
    models: dict[str, ModelConfig] = {}
    for name, entry in table.items():
        where = f"models file {source}: model {name!r}"
        if not MODEL_NAME_RE.match(name):
            raise ModelsFileError(f"{where}: invalid name (letters, digits and ._:/@+- only, at most 128 characters)")
        if not isinstance(entry, dict):
            raise ModelsFileError(f"{where}: must be a table, got {type(entry).__name__}")
        try:
            cfg = msgspec.convert({**entry, "name": name}, ModelConfig)
        except msgspec.ValidationError as exc:
            raise ModelsFileError(f"{where}: {describe_validation(exc)}") from None
        if cfg.engine not in ENGINE_OPTIONS:
            raise ModelsFileError(f"{where}: unknown engine {cfg.engine!r}; known engines: {sorted(ENGINE_OPTIONS)}")
        try:
            cfg.engine_options()
        except msgspec.ValidationError as exc:
            raise ModelsFileError(f"{where}: engine {cfg.engine!r} options: {describe_validation(exc)}") from None
        if cfg.default_max_tokens > cfg.max_tokens_limit:
            raise ModelsFileError(f"{where}: default_max_tokens exceeds max_tokens_limit")
        if cfg.low_watermark >= cfg.high_watermark:
            raise ModelsFileError(
                f"{where}: flow.low_watermark must be below flow.high_watermark ({cfg.high_watermark})"
            )
        if cfg.scaling.min_replicas > cfg.scaling.max_replicas:
            raise ModelsFileError(f"{where}: scaling.min_replicas exceeds scaling.max_replicas")
        _check_modal(cfg, name, where)
        models[name] = cfg
    _check_fallback(models, source)
    tenants = _tenants(doc.get("tenants", {}), models, source)
    sinks = parse_sinks(doc.get("sinks", {}), source)
    return ModelsConfig(models=models, path=source, tenants=tenants, sinks=sinks)


def _check_fallback(models: dict[str, ModelConfig], source: str) -> None:
    """Every chain names configured models, never its own model or one twice, and following the
    chains from any model never comes back to it."""
    for name, cfg in models.items():
        where = f"models file {source}: model {name!r}: fallback"
        for entry in cfg.fallback:
            if entry not in models:
                raise ModelsFileError(f"{where}: {entry!r} is not a configured model; known models: {sorted(models)}")
            if entry == name:
                raise ModelsFileError(f"{where}: a model cannot fall back to itself")
        if len(set(cfg.fallback)) != len(cfg.fallback):
            raise ModelsFileError(f"{where}: names a model more than once")
        if cfg.budget is not None and cfg.budget.models:
            raise ModelsFileError(
                f"models file {source}: model {name!r}: budget.models is for tenant budgets; "
                f"a model's budget always counts that model only"
            )
    for name in models:
        cycle = _cycle_from(name, models, [name])
        if cycle:
            raise ModelsFileError(
                f"models file {source}: fallback chains form a cycle: {' -> '.join(cycle)}; "
                f"a request could move between these models forever"
            )


def _cycle_from(name: str, models: dict[str, ModelConfig], path: list[str]) -> list[str] | None:
    for nxt in models[name].fallback:
        if nxt == path[0]:
            return [*path, nxt]
        if nxt not in path:
            found = _cycle_from(nxt, models, [*path, nxt])
            if found:
                return found
    return None


def _tenants(table: Any, models: dict[str, ModelConfig], source: str) -> dict[str, TenantConfig]:
    if not isinstance(table, dict):
        raise ModelsFileError(f"models file {source}: tenants must be a table of [tenants.NAME] tables")
    out: dict[str, TenantConfig] = {}
    for name, entry in table.items():
        where = f"models file {source}: tenant {name!r}"
        try:
            cfg = msgspec.convert(entry, TenantConfig)
        except msgspec.ValidationError as exc:
            raise ModelsFileError(f"{where}: {describe_validation(exc)}") from None
        for model in cfg.budget.models if cfg.budget else []:
            if model not in models:
                raise ModelsFileError(
                    f"{where}: budget.models: {model!r} is not a configured model; known models: {sorted(models)}"
                )
        out[name] = cfg
    return out


def _check_modal(cfg: ModelConfig, name: str, where: str) -> None:
    """Refuse a Modal setup that cannot work as written: GPUs nobody starts or nobody uses."""
    backend, modal = cfg.scaling.backend, cfg.modal
    key = name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else f'"{name}"'  # as written in TOML
    table = f"[models.{key}.modal]"
    if modal is None:
        if backend == "modal":
            raise ModelsFileError(
                f'{where}: scaling.backend = "modal" needs a {table} table (at least '
                f'gpu = "..."): without it no Modal class is deployed for the model'
            )
        return
    if backend != "modal":
        raise ModelsFileError(
            f'{where}: has a {table} table but scaling.backend = "{backend}", so its Modal '
            f"class would never be called; remove scaling.backend (a modal table means the modal "
            f"backend) or remove the modal table to run the model's workers another way"
        )
    if modal.gpu_snapshot and not modal.memory_snapshot:
        raise ModelsFileError(
            f"{where}: modal.gpu_snapshot needs modal.memory_snapshot = true (Modal takes both at once)"
        )
    if modal.gpu_snapshot and cfg.engine != "vllm":
        raise ModelsFileError(
            f"{where}: modal.gpu_snapshot needs the vllm engine (it puts vLLM to sleep before the snapshot); "
            f"engine is {cfg.engine!r}: use modal.memory_snapshot alone"
        )
    cap = cfg.modal_max_containers
    assert cap is not None  # the model has a modal table
    if modal.min_containers > cap:
        raise ModelsFileError(
            f"{where}: modal.min_containers ({modal.min_containers}) exceeds "
            f"modal.max_containers ({cfg.modal_max_containers})"
        )
    if modal.min_containers > cfg.scaling.min_replicas:
        raise ModelsFileError(
            f"{where}: modal.min_containers ({modal.min_containers}) exceeds scaling.min_replicas "
            f"({cfg.scaling.min_replicas}): only runs the dispatcher spawns serve requests, so the "
            f"extra containers would stay idle and be billed; to keep {modal.min_containers} warm, "
            f"set scaling.min_replicas = {modal.min_containers} (the dispatcher keeps that many "
            f"runs going), or lower modal.min_containers"
        )


def load_models(path: str | Path) -> ModelsConfig:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ModelsFileError(missing_file_message(p)) from None
    return parse_models(text, str(p))


# The example models files ship beside the packages (a source checkout, the container image).
EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"


def missing_file_message(path: Path) -> str:
    """One line for a models file that is not there: the variable that chose it, the path tried,
    and the example files to start from, since a fresh checkout has no file at the default path."""
    examples = sorted(EXAMPLES_DIR.glob("*.toml"))
    if examples:
        # the simulated models of the local file need no download, so they suit a first run
        first = next((e for e in examples if e.name == "models.local.toml"), examples[0])
        shown = ", ".join(_shown(e) for e in examples)
        hint = f"start from an example: {shown} (e.g. INFERQ_MODELS={_shown(first)})"
    else:
        hint = "start from one of the examples/*.toml files of the inferq repository"
    return (
        f"INFERQ_MODELS: models file {path} not found (tried {path.absolute()}); "
        f"set INFERQ_MODELS to your models file, or {hint}"
    )


def _shown(path: Path) -> str:
    """The path as a user in the working directory would type it: relative when it is below it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
