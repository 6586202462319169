"""A real DVC project in a temporary git repository, running this checkout's code."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


class DvcRepo:
    def __init__(self, root: Path, model_dir: Path, overrides: dict[str, dict]):
        self.root = root
        for name in ("dlma", "stages"):
            shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        for name in ("dvc.yaml", ".dvcignore", ".gitignore"):
            shutil.copy(REPO / name, root / name)
        (root / "data").mkdir()
        for name in ("prompts.jsonl", "labelled_pairs.jsonl"):
            shutil.copy(REPO / "data" / name, root / "data" / name)
        params = yaml.safe_load((REPO / "params.yaml").read_text())
        params["model"]["base"] = str(model_dir)
        for section, values in overrides.items():
            params.setdefault(section, {}).update(values)
        self.write_params(params)
        self.env = dict(os.environ, DVC_NO_ANALYTICS="1", PYTHONUNBUFFERED="1")
        # Each repository has its own store; a URI another test set (mlflow.set_tracking_uri
        # exports it) must not send this one's runs elsewhere.
        for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "DVC_ROOT"):
            self.env.pop(name, None)
        # The stages run `python -m ...`: make it this interpreter.
        self.env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + self.env.get("PATH", "")
        self.run("git", "init", "-q")
        self.run("git", "config", "user.email", "test@example.com")
        self.run("git", "config", "user.name", "test")
        self.run("dvc", "init", "-q")
        self.commit("init")

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(args, cwd=self.root, env=self.env, capture_output=True, text=True)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result

    def commit(self, message: str) -> None:
        self.run("git", "add", "-A")
        self.run("git", "commit", "-qm", message, "--allow-empty")

    def params(self) -> dict:
        return yaml.safe_load((self.root / "params.yaml").read_text())

    def write_params(self, params: dict) -> None:
        (self.root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    def set_param(self, section: str, key: str, value) -> None:
        params = self.params()
        params[section][key] = value
        self.write_params(params)

    def repro(self, *args: str) -> list[str]:
        """Run `dvc repro` and return the names of the stages that ran."""
        result = self.run("dvc", "repro", *args)
        return re.findall(r"Running stage '([^']+)'", result.stdout + result.stderr)

    def sha(self, relative: str) -> str:
        return hashlib.sha256((self.root / relative).read_bytes()).hexdigest()

    def start_queue(self, jobs: int) -> None:
        """`dvc queue start -j N`, its output to a file, not to pipes: the workers it leaves in
        the background inherit them, and a worker that misses its shutdown message (seen with
        -j 2: its monitor said "shutting down" while its task still ran, and it then idled for
        good) would hold a pipe open and block this call forever."""
        log = self.root / ".dvc" / "tmp" / "queue-start.log"  # .dvc/tmp is git-ignored
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a") as handle:
            result = subprocess.run(["dvc", "queue", "start", "-j", str(jobs)], cwd=self.root, env=self.env,
                                    stdout=handle, stderr=handle, timeout=300)
        assert result.returncode == 0, log.read_text()

    def wait_for_queue(self, timeout: float = 900) -> str:
        """Wait until `dvc queue status` shows nothing queued or running; then end the workers
        that are still up (one that missed its shutdown idles on); return the status."""
        deadline = time.time() + timeout
        while True:
            status = self.run("dvc", "queue", "status").stdout
            if not re.search(r"\b(Queued|Running)\b", status):
                self.stop_workers()
                return status
            assert time.time() < deadline, status
            time.sleep(5)

    def stop_workers(self, grace: float = 60) -> None:
        """Give the queue's workers `grace` seconds to exit by themselves, then terminate the rest."""
        pids = []
        for pid_file in (self.root / ".dvc" / "tmp" / "exps" / "celery").glob("*.pid"):
            try:
                pids.append(int(pid_file.read_text().strip()))
            except ValueError:
                continue
        deadline = time.time() + grace
        for pid in pids:
            while _alive(pid) and time.time() < deadline:
                time.sleep(1)
            if _alive(pid):
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:  # it exited in between
                    pass


def _alive(pid: int) -> bool:
    """Whether a process runs (a zombie counts as ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    return state != "Z"
