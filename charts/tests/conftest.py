"""Shared helpers for the deployment tests: render the chart with Helm's own engine."""

from __future__ import annotations

import os
import subprocess
import threading
import urllib.request
from pathlib import Path

import helm_python
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "openchat-backend"
RELEASE = "oc"
NAMESPACE = "chat"
HANG_GUARD_S = 30


def in_ci() -> bool:
    return os.environ.get("CI") == "true"


def need(condition: bool, what: str) -> None:
    """A missing prerequisite fails under CI=true and skips elsewhere (never silently)."""
    if condition:
        return
    if in_ci():
        pytest.fail(f"missing prerequisite under CI=true: {what}")
    pytest.skip(f"missing prerequisite: {what}")


class Rendered:
    """One render of the chart: the manifests (parsed) and NOTES.txt."""

    def __init__(self, files: dict[str, str]):
        self.files = files
        self.docs: list[dict] = []
        self.notes = ""
        for path, text in sorted(files.items()):
            if path.endswith("NOTES.txt"):
                self.notes = text
                continue
            for doc in yaml.safe_load_all(text):
                if doc:
                    self.docs.append(doc)

    def kinds(self) -> list[str]:
        return sorted(doc["kind"] for doc in self.docs)

    def all(self, kind: str) -> list[dict]:
        return [doc for doc in self.docs if doc["kind"] == kind]

    def one(self, kind: str, suffix: str = "") -> dict:
        found = [d for d in self.all(kind) if d["metadata"]["name"].endswith(suffix)]
        assert len(found) == 1, f"expected one {kind} named *{suffix}, got {[d['metadata']['name'] for d in found]}"
        return found[0]

    def maybe(self, kind: str) -> dict | None:
        found = self.all(kind)
        return found[0] if found else None

    @property
    def deployment(self) -> dict:
        return self.one("Deployment")

    @property
    def pod(self) -> dict:
        return self.deployment["spec"]["template"]["spec"]

    @property
    def container(self) -> dict:
        containers = self.pod["containers"]
        assert [c["name"] for c in containers] == ["openchatd"]
        return containers[0]

    def env(self) -> dict[str, dict]:
        return {entry["name"]: entry for entry in self.container["env"]}


def render(values: dict | None = None) -> Rendered:
    chart = helm_python.Chart.load(str(CHART))
    return Rendered(chart.render(values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True))


def render_error(values: dict) -> str:
    """Renders values the chart must refuse; returns the error message."""
    chart = helm_python.Chart.load(str(CHART))
    with pytest.raises(helm_python.HelmError) as refused:
        chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return str(refused.value)


def chart_values() -> dict:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def start_openchatd(binary: str, data_dir: str, preexec_fn=None) -> subprocess.Popen:
    """openchatd on an ephemeral loopback port, one shard, JSON logs on stderr."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCHAT_")}
    env.update(
        OPENCHAT_HTTP_ADDR="127.0.0.1:0",
        OPENCHAT_MEDIA_PORT_BASE="0",
        OPENCHAT_SHARDS="1",
        OPENCHAT_DATA_DIR=data_dir,
        OPENCHAT_LOG_FORMAT="json",
        OPENCHAT_LOG="info",
    )
    return subprocess.Popen(
        [binary],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=preexec_fn,
    )


def read_until(proc: subprocess.Popen, marker: str) -> tuple[str | None, list[str]]:
    """Stderr lines up to the first containing `marker` (None if the process ends first)."""
    lines: list[str] = []
    timer = threading.Timer(HANG_GUARD_S, proc.kill)
    timer.start()
    try:
        for line in proc.stderr:
            lines.append(line.rstrip("\n"))
            if marker in line:
                return line, lines
        return None, lines
    finally:
        timer.cancel()


def listening_addr(proc: subprocess.Popen, earlier: list[str]) -> str:
    """Reads on to openchatd's "listening" line; returns its address."""
    import json

    listening, more = read_until(proc, '"listening"')
    assert listening is not None, "\n".join(earlier + more)
    return json.loads(listening)["addr"]


def http_get(addr: str, path: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(f"http://{addr}{path}", timeout=10) as answer:
        return answer.status, answer.read()


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(timeout=HANG_GUARD_S)
