"""Evidently's side of ``driftctl bench detect``: its own virtualenv and one run of deploy/evidently_runner.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, TextIO

from deploy.scenarios import Scenario

EVIDENTLY_WINDOW = 500
EVIDENTLY_REQUIREMENTS = ("evidently==0.7.23", "pandas>=2.2,<3")  # 0.7 API; pandas 3 is untested by it


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def evidently_python(settings, log: TextIO | None = None) -> Path:
    """The interpreter of the Evidently virtualenv under the run dir, created on first use.

    Evidently 0.7 wants pandas < 3 and brings a web stack (litestar, uvicorn, plotly, nltk),
    so it does not go into the project's environment.
    """
    venv = Path(settings.run_dir).resolve() / "bench-evidently-venv"
    py = venv / "bin" / "python"
    marker = venv / ".requirements"
    wanted = "\n".join(EVIDENTLY_REQUIREMENTS)
    if py.exists() and marker.exists() and marker.read_text() == wanted:
        return py
    _say(f"  creating the Evidently virtualenv {venv} (first use; about a minute)")
    shutil.rmtree(venv, ignore_errors=True)
    base = getattr(sys, "_base_executable", None) or sys.executable
    subprocess.run([base, "-m", "venv", str(venv)], check=True, capture_output=True, text=True)
    proc = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", *EVIDENTLY_REQUIREMENTS],
        check=False,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"pip install {' '.join(EVIDENTLY_REQUIREMENTS)} failed:\n{proc.stderr[-2000:]}")
    marker.write_text(wanted)
    return py


def run_evidently(settings, scenario: Scenario, events_file: Path, out_file: Path) -> dict[str, Any]:
    """Run deploy/evidently_runner.py in the Evidently virtualenv; its JSON result, or an error."""
    try:
        py = evidently_python(settings)
    except (OSError, subprocess.SubprocessError, RuntimeError) as exc:
        return {"ok": False, "error": f"no Evidently environment: {exc}"}
    runner = Path(__file__).resolve().parent / "evidently_runner.py"
    cmd = [
        str(py), str(runner), "--events", str(events_file), "--out", str(out_file),
        "--numeric", ",".join(scenario.features), "--categorical", ",".join(scenario.categorical),
        "--window", str(EVIDENTLY_WINDOW), "--jobs", str(max(1, os.cpu_count() or 1)),
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(DO_NOT_TRACK="1", ITERATIVE_DO_NOT_TRACK="1")
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, timeout=3600)
    if proc.returncode != 0 or not out_file.exists():
        return {"ok": False, "error": f"evidently_runner exited {proc.returncode}: {proc.stderr[-2000:]}"}
    data = json.loads(out_file.read_text())
    return {
        "ok": True,
        "version": data["evidently_version"],
        "metrics": data.get("metrics"),
        "window": data["window"],
        "windows": data["windows"],
        "tests": data["tests"],
        "methods": data["methods"],
        "seconds": data["seconds"],
        "flags": data["flags"],
    }
