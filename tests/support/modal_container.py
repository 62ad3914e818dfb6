"""A stand-in for Modal's container runtime, for the rehearsal of the deployment: runs one class of
the deployment from a directory that holds only the files a Modal container would (see
inferq/modal_files.py), through the modal client's own container code: its user-code event loop
(SIGUSR1 cancels the running input, as Modal delivers `FunctionCall.cancel()` to a container with
`max_inputs=1`), its class import and its lifecycle order (`@enter(snap=True)`, the snapshot,
`@enter(snap=False)`, the inputs, `@exit`). What only Modal's servers do is replaced: inputs are
JSON lines on stdin (the keyword arguments of `run`), each output a JSON line on stdout, and the
end of stdin is the container's shutdown (scale-down). A memory snapshot cannot be taken here: the
point where Modal would take it is printed instead.

    python tests/support/modal_container.py ROOT MODULE CLASS [--snapshot]

ROOT is the materialised directory (ROOT/root is the container's /root, its working directory and
first on sys.path); the project checkout is taken off the import path, so a file missing from ROOT
fails here as it would on Modal.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path


def only_the_deployed_files(container_root: Path) -> None:
    """sys.path as in the container: its /root first, then the installed packages; no checkout
    (neither the directory of this script nor an editable install's finder)."""
    here = str(Path(__file__).resolve().parent)
    checkout = str(Path(here).parents[1])
    sys.path[:] = [str(container_root)] + [p for p in sys.path if p not in ("", here, checkout)]
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__module__.lower()]
    sys.path_hooks[:] = [h for h in sys.path_hooks if "editable" not in getattr(h, "__module__", "").lower()]
    sys.path_importer_cache.clear()
    for name in [m for m in sys.modules if m.split(".")[0] in ("shared", "services", "inferq")]:
        del sys.modules[name]


class _Lifecycle:
    """The part of Modal's task lifecycle manager the class lifecycle calls."""

    @contextmanager
    def handle_task_lifecycle_exception(self):
        yield

    def memory_snapshot(self) -> None:
        print(json.dumps({"event": "snapshot"}), flush=True)

    def volume_commit(self, volume_ids) -> None:
        pass


async def _one_input(run, kwargs: dict) -> dict:
    """One input, its outcome as Modal reports it: an output, or terminated when cancelled."""
    try:
        return {"event": "output", "value": await run(**kwargs)}
    except asyncio.CancelledError:
        return {"event": "cancelled"}


def _emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


def main() -> int:
    root, module_name, cls_name = Path(sys.argv[1]).resolve(), sys.argv[2], sys.argv[3]
    snapshot = "--snapshot" in sys.argv[4:]
    container_root = root / "root"
    os.chdir(container_root)
    only_the_deployed_files(container_root)

    from modal._runtime.task_lifecycle_manager import _TaskLifecycleManager
    from modal._runtime.user_code_event_loop import UserCodeEventLoop
    from modal._runtime.user_code_imports import import_class_service
    from modal_proto import api_pb2

    lifecycle = _Lifecycle()
    _TaskLifecycleManager._singleton = lifecycle  # modal.is_local() is False from here on, as in a container
    if snapshot:
        os.environ["MODAL_ENABLE_SNAP_RESTORE"] = "1"
    function_def = api_pb2.Function(
        module_name=module_name,
        function_name=f"{cls_name}.*",
        definition_type=api_pb2.Function.DEFINITION_TYPE_FILE,
        method_definitions={"run": api_pb2.MethodDefinition(function_name="run")},
        is_checkpointing_function=snapshot,
    )
    service = import_class_service(function_def, api_pb2.Object(), "cs-rehearsal", None, None, (), {})
    imported = sorted(
        {m.__file__ for name, m in sys.modules.items() if name.split(".")[0] in ("shared", "services") and m.__file__}
    )
    outside = [f for f in imported if not f.startswith(str(container_root))]
    _emit({"event": "imported", "modules": len(imported), "outside": outside})
    with UserCodeEventLoop() as loop:
        with service.lifecycle_context(loop, lifecycle, disable_signals_on_exit=True):
            _emit({"event": "entered"})
            run = service.get_finalized_functions(function_def, None)["run"].callable
            for line in sys.stdin:
                _emit(loop.run(_one_input(run, json.loads(line))))
        _emit({"event": "exited"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
