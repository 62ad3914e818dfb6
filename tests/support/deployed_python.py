"""`python tests/support/deployed_python.py DIR MODULE ARGS...`: run `python -m MODULE ARGS...` from a
deployed file set alone (DIR first on sys.path, as a container's working directory is), with the
project checkout and its editable install taken off the import path: a file the deployment lacks
fails here as it would in the container."""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from modal_container import only_the_deployed_files  # noqa: E402

if __name__ == "__main__":
    root, module = Path(sys.argv[1]).resolve(), sys.argv[2]
    os.chdir(root)
    only_the_deployed_files(root)
    sys.argv = [module, *sys.argv[3:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
