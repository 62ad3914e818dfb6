"""`python -m services.inference --model NAME`: run one worker process for one model."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from services.inference.engines import create_engine
from services.inference.worker import InferenceWorker
from shared.catalog.models import ModelsFileError, load_models
from shared.core.logs import configure_logging
from shared.core.settings import Settings, SettingsError
from shared.redis.client import check_server_at_start, connect
from shared.redis.keys import Keys


async def serve(settings: Settings, model_name: str, consumer: str | None) -> int:
    """Exit status: 0 after a signal, 2 when the engine refused its options, 3 when the engine died or
    failed to load (so the platform replaces the worker)."""
    model = load_models(settings.models_path).models[model_name]
    r = connect(settings.redis_url, settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if settings.metrics_port:
        from shared.ops.server import serve as serve_ops

        serve_ops(settings.metrics_port)  # /metrics, /healthz, /readyz
    worker = InferenceWorker(
        r,
        Keys(settings.key_prefix),
        model,
        create_engine(model),
        consumer=consumer,
        grace_s=settings.shutdown_grace_s,
        heartbeat_ttl_s=settings.heartbeat_ttl_s,
    )
    try:
        await worker.run(stop)
    except ModelsFileError as exc:  # the engine refused its options: a configuration error, not a crash
        print(f"inferq worker: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # the model could not load: say why, and let the platform retry
        cause = (str(exc).strip().splitlines() or [""])[0]  # one line; the traceback is in `exc`
        logging.getLogger("inferq.worker").critical(
            "the worker failed: %s: %s", type(exc).__name__, cause, exc_info=exc
        )
        return 3
    finally:
        await r.aclose()
    return 3 if worker.fatal is not None else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.inference", description="Run an inference worker for one model."
    )
    parser.add_argument("--model", required=True, help="model name from the models file")
    parser.add_argument("--consumer", help="consumer name (default: unique per process)")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        models = load_models(settings.models_path)
    except (SettingsError, ModelsFileError) as exc:
        print(f"inferq worker: {exc}", file=sys.stderr)
        return 2
    if problem := check_server_at_start(settings.redis_url):
        print(f"inferq worker: {problem}", file=sys.stderr)
        return 2
    if args.model not in models.models:
        print(
            f"inferq worker: unknown model {args.model!r}; known models: {', '.join(models.names())}", file=sys.stderr
        )
        return 2
    configure_logging(f"inference:{args.model}", settings.log_level)
    try:
        import uvloop
    except ImportError:
        return asyncio.run(serve(settings, args.model, args.consumer))
    return uvloop.run(serve(settings, args.model, args.consumer))


if __name__ == "__main__":
    sys.exit(main())
