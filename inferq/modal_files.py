"""The files a Modal container of the deployment holds, worked out offline with the `modal` client's
own definitions: the deployment module is imported the way `modal deploy PATH` imports it (as a
script, so its module name is `modal_app`), and the local files of its image layers and of each
class's source mounts are listed as Modal would upload them. Nothing here needs an account.

`python -m inferq.modal_files --models FILE DIR` writes that file set under DIR, each file at its
container path (DIR/root/shared/...), so what a container would run can be run from DIR alone.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path, PurePosixPath
from types import ModuleType

APP_FILE = Path(__file__).resolve().parent.parent / "services" / "inference" / "modal_app.py"


def import_as_deployed(models_file: Path, app_file: Path = APP_FILE) -> ModuleType:
    """The deployment module as `modal deploy app_file` imports it, for this models file."""
    from modal.cli.import_refs import ImportRef, import_file_or_module
    from modal.exception import _CliUserExecutionError

    os.environ["INFERQ_MODELS"] = str(Path(models_file).resolve())
    sys.modules.pop(app_file.stem, None)
    try:
        return import_file_or_module(ImportRef(str(app_file), use_module_mode=False))
    except _CliUserExecutionError as exc:  # the CLI's wrapper: what the module raised is the news
        if exc.__cause__ is None:
            raise
        raise exc.__cause__ from None


def _mounts_of(obj, seen: set[int]) -> list:
    """Every modal Mount that `obj` (an image, a function) depends on, bases first."""
    from modal.mount import _Mount

    if id(obj) in seen:
        return []
    seen.add(id(obj))
    found = []
    for dep in obj._deps() if obj._deps else []:
        found += _mounts_of(dep, seen)
    if isinstance(obj, _Mount):
        found.append(obj)
    return found


def container_files(modal_cls) -> dict[PurePosixPath, Path]:
    """Container path -> local file, for everything of this machine a container of `modal_cls`
    gets: its image's local-file layers and the class's own source mounts (later ones win, as
    they are mounted later)."""
    from modal._utils.async_utils import synchronizer
    from modal.mount import NonLocalMountError, _select_files

    service = synchronizer._translate_in(modal_cls)._get_class_service_function()
    mounts = _mounts_of(service._spec_.image, set()) + list(service._spec_.mounts)
    files: dict[PurePosixPath, Path] = {}
    for mount in mounts:
        try:
            entries = mount.entries
        except NonLocalMountError:  # the modal client's own mount: Modal provides it
            continue
        for local, remote in sorted(_select_files(entries)):
            files[PurePosixPath(remote)] = Path(local)
    return files


def materialise(files: dict[PurePosixPath, Path], root: Path) -> Path:
    """Copy the file set under `root`, each file at its container path; returns `root`."""
    for remote, local in files.items():
        target = root / remote.relative_to("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(local, target)
    return root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m inferq.modal_files", description="Write the files a Modal container would hold."
    )
    parser.add_argument("--models", required=True, type=Path, help="the models file to deploy")
    parser.add_argument("out", type=Path, help="directory to write them under (container paths)")
    args = parser.parse_args(argv)
    module = import_as_deployed(args.models)
    for model, cls in module.WORKER_CLASSES.items():
        files = container_files(cls)
        materialise(files, args.out)
        print(f"{model}: {len(files)} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
