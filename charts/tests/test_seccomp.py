"""The chart's seccomp profile (files/seccomp-io-uring.json) really lets openchatd run its
io_uring media shards, and a profile that blocks io_uring (as container runtimes' defaults
do) makes openchatd stop at start-up naming the cause. The profile is loaded with libseccomp
(pyseccomp) into the openchatd process before it starts."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

import pytest
import pyseccomp as seccomp

from conftest import CHART, HANG_GUARD_S, REPO, http_get, listening_addr, need, read_until, start_openchatd, stop

PROFILE = CHART / "files" / "seccomp-io-uring.json"
IO_URING = ["io_uring_setup", "io_uring_enter", "io_uring_register"]


def openchatd() -> str:
    candidates = [os.environ.get("OPENCHATD_BIN", "")]
    target = os.environ.get("CARGO_TARGET_DIR")
    candidates.append(str(Path(target) / "debug" / "openchatd") if target else "")
    candidates.append(str(REPO / "target" / "debug" / "openchatd"))
    found = next((c for c in candidates if c and os.access(c, os.X_OK)), None)
    need(found is not None, "the openchatd debug binary (cargo build --bin openchatd; OPENCHATD_BIN)")
    return found


def filter_from(profile: dict, extra_denied: list[str] = ()) -> seccomp.SyscallFilter:
    """A libseccomp filter with the profile's semantics for this architecture (the subset of
    the OCI profile format the chart's profile uses: a default action plus ERRNO rules)."""
    assert profile["defaultAction"] == "SCMP_ACT_ALLOW"
    actions = {rule["action"] for rule in profile["syscalls"]}
    assert actions == {"SCMP_ACT_ERRNO"}, actions
    filt = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    for rule in profile["syscalls"]:
        for name in [*rule["names"], *extra_denied]:
            try:
                filt.add_rule(seccomp.ERRNO(rule.get("errnoRet", 1)), name)
            except Exception:
                # Not a syscall of this architecture (vm86 on x86_64, say): runc skips these too.
                pass
    return filt


def start(filt: seccomp.SyscallFilter, data_dir: str) -> subprocess.Popen:
    return start_openchatd(openchatd(), data_dir, preexec_fn=filt.load)


def test_openchatd_runs_its_media_shards_under_the_charts_seccomp_profile():
    profile = json.loads(PROFILE.read_text())
    assert not set(IO_URING) & {n for r in profile["syscalls"] for n in r["names"]}
    with tempfile.TemporaryDirectory() as data:
        proc = start(filter_from(profile), data)
        try:
            shards, log = read_until(proc, "media shards running")
            assert shards is not None, "\n".join(log)
            assert http_get(listening_addr(proc, log), "/healthz")[0] == 200
        finally:
            stop(proc)


def test_a_profile_that_blocks_io_uring_stops_openchatd_naming_the_cause():
    profile = json.loads(PROFILE.read_text())
    with tempfile.TemporaryDirectory() as data:
        proc = start(filter_from(profile, IO_URING), data)
        try:
            stderr = proc.communicate(timeout=HANG_GUARD_S)[1]
        finally:
            proc.kill()
        assert proc.returncode == 2, stderr
        assert "io_uring is not permitted" in stderr, stderr
        assert "seccomp" in stderr, stderr


def test_the_profile_denies_what_it_says_it_denies():
    profile = json.loads(PROFILE.read_text())
    denied = {n for r in profile["syscalls"] for n in r["names"]}
    for name in ["mount", "ptrace", "bpf", "unshare", "setns", "kexec_load", "init_module", "keyctl"]:
        assert name in denied, name
    assert "SCMP_ARCH_X86_64" in profile["architectures"] and "SCMP_ARCH_AARCH64" in profile["architectures"]


def test_openchatd_runs_as_the_charts_user_without_capabilities_under_the_profile():
    """What the chart's securityContext gives the container: uid/gid 10001, no supplementary
    groups, no capabilities, no_new_privs (libseccomp sets it) and the Localhost profile;
    the soft locked-memory limit is raised without privilege and the shards start."""
    import shutil
    import yaml

    need(os.geteuid() == 0, "root (to switch to the chart's uid)")
    pod = yaml.safe_load((CHART / "values.yaml").read_text())["podSecurityContext"]
    uid, gid = pod["runAsUser"], pod["runAsGroup"]
    # A copy the unprivileged user can reach (the build directory may sit under /root, and
    # pytest's own temporary directories are private to root).
    scratch = tempfile.TemporaryDirectory()
    tmp_path = Path(scratch.name)
    binary = tmp_path / "openchatd"
    shutil.copy2(openchatd(), binary)
    data = tmp_path / "data"
    data.mkdir()
    os.chown(data, uid, gid)
    os.chmod(tmp_path, 0o755)
    filt = filter_from(json.loads(PROFILE.read_text()))

    def drop_privileges_then_filter():
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)  # a non-root uid keeps no capabilities
        filt.load()

    proc = start_openchatd(str(binary), str(data), preexec_fn=drop_privileges_then_filter)
    try:
        shards, log = read_until(proc, "media shards running")
        assert shards is not None, "\n".join(log)
        assert json.loads(shards)["ipc_lock"] == "not held"
        status = Path(f"/proc/{proc.pid}/status").read_text()
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        assert fields["Uid"].split()[1] == str(uid)
        assert int(fields["CapEff"].strip(), 16) == 0
        assert fields["NoNewPrivs"].strip() == "1"
        assert fields["Seccomp"].strip() == "2"
        assert http_get(listening_addr(proc, log), "/readyz")[0] == 200
    finally:
        stop(proc)
        scratch.cleanup()
