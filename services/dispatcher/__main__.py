"""`python -m services.dispatcher`: run the dispatcher's arq worker."""

from __future__ import annotations

import asyncio
import sys

from shared.logs import configure_logging
from shared.models_config import ModelsFileError, load_models
from shared.redis_client import check_server_at_start
from shared.settings import Settings, SettingsError


def main() -> int:
    try:
        settings = Settings.from_env()
        load_models(settings.models_path)  # fail at start, with the entry named, not inside arq
    except (SettingsError, ModelsFileError) as exc:
        print(f"inferq dispatcher: {exc}", file=sys.stderr)
        return 2
    if problem := check_server_at_start(settings.redis_url):
        print(f"inferq dispatcher: {problem}", file=sys.stderr)
        return 2
    configure_logging("dispatcher", settings.log_level)
    try:
        from uvloop import new_event_loop
    except ImportError:
        new_event_loop = asyncio.new_event_loop
    asyncio.set_event_loop(new_event_loop())
    from arq.worker import run_worker

    from services.dispatcher.worker import WorkerSettings

    run_worker(WorkerSettings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
