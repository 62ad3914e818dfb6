"""The file sets of the two deployments, as directories a test can run from: the dispatcher's image
(the Dockerfile's COPY lines under its WORKDIR, less .dockerignore) and a Modal GPU container
(inferq/modal_files.py, the modal client's own mount definitions)."""

from __future__ import annotations

import fnmatch
import shlex
import subprocess
import sys
from pathlib import Path, PurePosixPath

from inferq.modal_files import materialise
from tests.conftest import ROOT

__all__ = ["dockerfile_files", "materialise", "modal_container_files"]


def _ignored(relative: PurePosixPath, patterns: list[str]) -> bool:
    text = relative.as_posix()
    for pattern in patterns:
        bare = pattern.removeprefix("**/")
        if fnmatch.fnmatch(text, pattern) or any(fnmatch.fnmatch(part, bare) for part in relative.parts):
            return True
        if text.startswith(pattern.rstrip("/") + "/"):
            return True
    return False


def dockerfile_files(dockerfile: Path = ROOT / "Dockerfile") -> dict[PurePosixPath, Path]:
    """Image path -> checkout file, for every file the Dockerfile's COPY lines put in the image."""
    patterns = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines() if p.strip()]
    workdir = PurePosixPath("/")
    files: dict[PurePosixPath, Path] = {}
    for line in dockerfile.read_text().splitlines():
        words = shlex.split(line, comments=True)
        if not words:
            continue
        if words[0] == "WORKDIR":
            workdir = workdir / words[1]
        elif words[0] == "COPY":
            *sources, dest = words[1:]
            target = workdir / dest
            for source in sources:
                path = ROOT / source
                found = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
                for f in found:
                    relative = PurePosixPath(f.relative_to(ROOT).as_posix())
                    if _ignored(relative, patterns):
                        continue
                    inside = f.relative_to(path) if path.is_dir() else PurePosixPath(f.name)
                    files[target / PurePosixPath(inside.as_posix())] = f
    return files


def modal_container_files(models_file: Path, root: Path) -> Path:
    """What `modal deploy` of this models file would give each GPU container, written under `root`
    by the deployment's own tool (the container's /root is root/root)."""
    subprocess.run(
        [sys.executable, "-m", "inferq.modal_files", "--models", str(models_file), str(root)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=120,
    )
    return root
