"""The Dockerfile (linted with hadolint, its stages checked against each other and the chart)
and the GitHub workflows (schema-validated, the chart tag check exercised). No Docker engine
runs here, so the image itself is not built by these tests."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import CHART, REPO, chart_values, need

DOCKERFILE = REPO / "Dockerfile"
WORKFLOWS = REPO / ".github" / "workflows"
TAG_SCRIPT = REPO / ".github" / "scripts" / "chart-release-version.sh"
VENV_BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    path = VENV_BIN / name
    return str(path) if path.exists() else (shutil.which(name) or name)


def stages() -> list[dict]:
    """FROM lines with global ARG defaults substituted, and each stage's instructions."""
    args: dict[str, str] = {}
    result: list[dict] = []
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "ARG" and not result:
            name, _, default = rest.partition("=")
            args[name] = default.strip('"')
        elif word == "FROM":
            image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], rest.split()[0])
            alias = rest.split()[2] if " AS " in rest.upper() else None
            result.append({"image": image, "alias": alias, "lines": []})
        elif result:
            result[-1]["lines"].append((word, rest))
    return result


def test_hadolint_passes():
    done = subprocess.run([tool("hadolint"), str(DOCKERFILE)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_runtime_stage_matches_the_glibc_build_stage():
    build, runtime = stages()
    builder = re.fullmatch(r"rust:([0-9.]+)-slim-(\w+)", build["image"])
    assert builder, build["image"]
    rust, suite = builder.groups()
    assert runtime["image"] == f"debian:{suite}-slim", "the runtime must be the builder's Debian release (same glibc)"
    commands = " ".join(rest for word, rest in build["lines"] if word == "RUN")
    assert "musl" not in commands, "a musl build would belong on a minimal base, not Debian"
    assert "cargo build --release --locked" in commands
    cargo = (REPO / "Cargo.toml").read_text()
    minimum = re.search(r'^rust-version = "([0-9.]+)"', cargo, re.M).group(1)
    assert tuple(map(int, rust.split("."))) >= tuple(map(int, minimum.split("."))), (rust, minimum)
    copies = [rest for word, rest in runtime["lines"] if word == "COPY"]
    assert copies == [f"--from={build['alias']} /out/ /usr/local/bin/"]


def test_image_runs_as_the_non_root_user_the_chart_expects():
    runtime = stages()[-1]
    users = [rest for word, rest in runtime["lines"] if word == "USER"]
    assert users, "no USER in the runtime stage"
    uid, _, gid = users[-1].partition(":")
    pod = chart_values()["podSecurityContext"]
    assert int(uid) != 0 and int(uid) == pod["runAsUser"] and int(gid) == pod["runAsGroup"]
    entry = [rest for word, rest in runtime["lines"] if word == "ENTRYPOINT"]
    assert entry == ['["/usr/local/bin/openchatd"]']
    exposed = " ".join(rest for word, rest in runtime["lines"] if word == "EXPOSE")
    assert str(chart_values()["containerPort"]) in exposed.split()


def test_build_arguments_reach_the_build_info_the_binary_reports():
    build = stages()[0]
    env = " ".join(rest for word, rest in build["lines"] if word == "ENV")
    build_rs = (REPO / "build.rs").read_text()
    for arg, var in [("BUILD_VERSION", "OPENCHAT_BUILD_VERSION"), ("BUILD_COMMIT", "OPENCHAT_BUILD_COMMIT"), ("BUILD_TIME", "OPENCHAT_BUILD_TIME")]:
        assert any(word == "ARG" and rest.startswith(arg) for word, rest in build["lines"]), arg
        assert f"{var}=${{{arg}}}" in env, var
        assert f'non_empty("{var}")' in build_rs, var
    ignored = (REPO / ".dockerignore").read_text().split()
    assert "target" in ignored and ".git" in ignored


def test_workflows_match_the_github_workflow_schema():
    files = sorted(str(p) for p in WORKFLOWS.iterdir())
    assert len(files) == 2
    done = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", *files],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_image_workflow_pushes_where_the_chart_pulls_from_and_skips_chart_tags():
    workflow = yaml.safe_load((WORKFLOWS / "build_push_image.yaml").read_text())
    on = workflow[True] if True in workflow else workflow["on"]
    assert on["push"]["branches"] == ["main"]
    assert "!chart-v*" in on["push"]["tags"]
    text = (WORKFLOWS / "build_push_image.yaml").read_text()
    repository = chart_values()["image"]["repository"]
    assert repository.startswith("ghcr.io/") and repository.endswith("/openchat-backend/server")
    assert 'image="ghcr.io/${owner}/openchat-backend/server"' in text
    for arg in ["BUILD_VERSION", "BUILD_COMMIT", "BUILD_TIME"]:
        assert f"{arg}=" in text


def test_chart_workflow_checks_the_tag_lints_packages_pushes_and_aliases():
    text = (WORKFLOWS / "publish-helm-chart.yml").read_text()
    workflow = yaml.safe_load(text)
    on = workflow[True] if True in workflow else workflow["on"]
    assert on["push"]["tags"] == ["chart-v*.*.*"]
    order = [
        ".github/scripts/chart-release-version.sh",
        "helm lint",
        "helm package charts/openchat-backend --version",
        'helm push "dist/openchat-backend-${VERSION}.tgz" "oci://ghcr.io/${owner}/charts"',
        'oras cp "ghcr.io/${owner}/charts/openchat-backend:${VERSION}"',
    ]
    steps = text[text.index("jobs:") :]
    positions = [steps.index(step) for step in order]
    assert positions == sorted(positions)
    assert '"ghcr.io/${owner}/charts/openchat-backend:chart-v${VERSION}"' in text


@pytest.mark.parametrize(
    "tag, expected",
    [
        ("chart-v0.2.0", "0.2.0"),
        ("chart-v0.2", None),
        ("chart-v0.2.0-rc.1", None),
        ("v0.2.0", None),
        ("chart-v0.2.0 ", None),
        ("chart-vX.Y.Z", None),
        ("chart-v9.9.9", None),  # well-formed, but Chart.yaml says another version
    ],
)
def test_chart_tag_check_accepts_only_chart_v_semver_matching_chart_yaml(tag, expected):
    chart_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["version"]
    assert chart_version == "0.2.0", "update the cases with the chart version"
    done = subprocess.run(["bash", str(TAG_SCRIPT), tag], capture_output=True, text=True, cwd=REPO)
    if expected is None:
        assert done.returncode != 0 and done.stderr.strip(), done
    else:
        assert done.returncode == 0 and done.stdout.strip() == expected, done


def docker_context(dest: Path) -> int:
    """Copies what `docker build .` would send: the checked-in files minus .dockerignore
    (exact names, directories, and glob patterns). Modification times are kept, so cargo
    only rebuilds what changed since the last run into the same `dest`."""
    import fnmatch

    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    kept = 0
    if dest.exists():
        shutil.rmtree(dest)
    for name in filter(None, files.decode().split("\0")):
        parts = name.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        ignored = any(
            fnmatch.fnmatch(prefix, pattern.removeprefix("**/")) or fnmatch.fnmatch(prefix, pattern)
            for pattern in patterns
            for prefix in prefixes + parts
        )
        source = REPO / name
        if ignored or not source.is_file():
            continue
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, dest / name)
        kept += 1
    return kept


def test_the_docker_build_context_builds_openchatd_reporting_the_build_arguments(tmp_path):
    """The Dockerfile's build step (`cargo build --locked` with OPENCHAT_BUILD_* from the build
    arguments) on exactly the files the build context holds, in the debug profile: proves the
    .dockerignore keeps what the build needs and the arguments reach --version and the
    capabilities document. The cargo target directory is kept between runs
    (OPENCHAT_DOCKER_CONTEXT_DIR) so only changed crates rebuild."""
    import json
    import os

    from conftest import http_get, listening_addr, read_until, start_openchatd, stop

    need(shutil.which("cargo") is not None and shutil.which("git") is not None, "cargo and git")
    base = Path(os.environ.get("OPENCHAT_DOCKER_CONTEXT_DIR") or tmp_path)
    context = base / "src"
    assert docker_context(context) > 50
    assert not (context / "charts").exists() and not (context / ".git").exists()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENCHAT_", "CARGO_TARGET"))}
    env.update(
        CARGO_TARGET_DIR=str(base / "target"),
        OPENCHAT_BUILD_VERSION="v0.1.0-context",
        OPENCHAT_BUILD_COMMIT="0123456789abcdef",
        OPENCHAT_BUILD_TIME="2026-11-29T00:00:00Z",
    )
    build = subprocess.run(
        ["cargo", "build", "--locked", "--bin", "openchatd", "--bin", "openchat-rtc-joiner"],
        cwd=context,
        env=env,
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr[-4000:]
    binary = str(base / "target" / "debug" / "openchatd")
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout
    assert "v0.1.0-context (0123456789abcdef, built 2026-11-29T00:00:00Z)" in version, version
    proc = start_openchatd(binary, str(tmp_path))
    try:
        started, log = read_until(proc, "starting openchatd")
        assert started is not None and json.loads(started)["version"] == "v0.1.0-context", log
        status, body = http_get(listening_addr(proc, log), "/v1/client/capabilities")
        assert status == 200
        doc = json.loads(body)
        assert doc["build_version"] == "v0.1.0-context"
        assert doc["build_commit"] == "0123456789abcdef"
    finally:
        stop(proc)
