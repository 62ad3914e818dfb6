"""Get a local stack's language models onto this machine before the workers start (`make demo`,
`inferq up`): each `transformers` model named by a hub id is downloaded from the Hugging Face hub
when the hub can be reached; otherwise a tiny randomly initialised stand-in is built on the spot,
and the note says plainly that its output is noise."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from inferq.tinymodel import build_tiny_model


def prepare(models_path: Path, workdir: Path) -> tuple[Path, list[str]]:
    """Return a models file whose transformers models point at local directories, and notes for the user."""
    text = models_path.read_text()
    doc = tomllib.loads(text)
    notes = []
    for name, entry in doc.get("models", {}).items():
        if entry.get("engine") != "transformers":
            continue
        source = entry.get("options", {}).get("model", "")
        if Path(source).exists():
            continue
        local, note = _fetch(source, workdir)
        notes.append(f"{name}: {note}")
        text = text.replace(f'model = "{source}"', f'model = "{local}"\nlocal_files_only = true', 1)
    out = workdir / "models.toml"
    out.write_text(text)
    return out, notes


def _fetch(repo_id: str, workdir: Path) -> tuple[Path, str]:
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "5")
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "20")
    try:
        from huggingface_hub import snapshot_download

        path = snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja"])
        return Path(path), f"{repo_id} (from the Hugging Face hub, cached in ~/.cache/huggingface)"
    except Exception as exc:  # offline, blocked, or rate limited: say so, and carry on
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"
        tiny = build_tiny_model((workdir / "tiny-model").resolve())
        return tiny, (
            f"OFFLINE: could not download {repo_id} ({reason}). Using a tiny randomly initialised "
            "model built on the spot instead: its output is NOISE, not language."
        )
