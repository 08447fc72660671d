"""Packaging hygiene: one version, the licence, no Redis dumps, bench failures."""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import pathlib
import shutil
import signal
import subprocess
import tomllib
import venv

import pytest
from helpers import UNIT
from helpers.brokers import running

import neffos

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_version_has_one_source() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    # written once, in the package; the build reads it from there
    assert "version" not in project["project"]
    assert "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "neffos.__version__"
    }
    # a stale install (the version changed, no reinstall since) fails here
    assert neffos.__version__ == importlib.metadata.version("neffos")


def test_licence_and_changelog() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT"
    assert project["license-files"] == ["LICENSE"]
    licence = (ROOT / "LICENSE").read_text()
    assert licence.startswith("MIT License\n")
    assert "Copyright (c) 2026 the neffos for Python authors" in licence
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert "\n## [Unreleased]\n" in changelog


def test_no_redis_dump_in_the_checkout() -> None:
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout")

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)

    assert git("ls-files", "--", "*.rdb").stdout == ""
    assert git("check-ignore", "-q", "dump.rdb").returncode == 0


def files_in(directory: str) -> list[str]:
    return os.listdir(directory)


@pytest.mark.broker
async def test_test_redis_writes_no_dump() -> None:
    """Redis saves on a graceful shutdown when it has save points: ours has none."""
    import redis.asyncio as aioredis

    async with running("redis") as broker:
        client = aioredis.Redis(host="127.0.0.1", port=broker.port)
        try:
            async with asyncio.timeout(5 * UNIT):
                assert await client.config_get("dir") == {"dir": broker.dir}
                assert await client.config_get("save") == {"save": ""}
                await client.set("written", "before the shutdown")
        finally:
            await client.aclose()
        assert broker.proc is not None
        broker.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10 * UNIT):
            assert await broker.proc.wait() == 0
        assert files_in(broker.dir) == []
    assert "dump.rdb" not in files_in(str(ROOT))


@pytest.mark.parametrize(
    ("loop", "missing"), [("uvloop", "uvloop"), ("asyncio", "picows")]
)
async def test_bench_stops_when_a_target_cannot_start(
    tmp_path: pathlib.Path, loop: str, missing: str
) -> None:
    """A Python without the benchmark's modules: the server's own error, exit 1."""
    bare = tmp_path / "bare"
    venv.EnvBuilder(with_pip=False).create(bare)
    out = tmp_path / "results.json"
    proc = await asyncio.create_subprocess_exec(
        str(bare / "bin" / "python"), str(ROOT / "bench" / "run.py"),
        "--targets", "ceiling,neffos-picows", "--scenarios", "echo", "--loop", loop,
        "--out", str(out),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(30 * UNIT):
        stdout, stderr = await proc.communicate()
    said = stderr.decode()
    assert proc.returncode == 1, said
    assert f"ModuleNotFoundError: No module named '{missing}'" in said
    assert "bench: target ceiling did not start (exited with status 1)" in said
    assert "pip install -e '.[bench]'" in said
    # the run stopped there: no other target, no table, no results file
    assert "on neffos-picows" not in said
    assert stdout == b""
    assert not out.exists()
