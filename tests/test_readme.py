"""The README's Getting Started code runs as printed (with a free port)."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

from helpers import UNIT

README = pathlib.Path(__file__).parent.parent / "README.md"


def getting_started() -> str:
    text = README.read_text()
    section = text.split("## Getting started", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None
    return match.group(1)


def test_getting_started_runs() -> None:
    code = getting_started()
    assert len(code.strip().splitlines()) <= 35
    assert '"127.0.0.1", 8080' in code
    code = code.replace('"127.0.0.1", 8080', '"127.0.0.1", 0')
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30 * UNIT
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "ask returned: echo: hi" in lines
    assert "client got: echo: Greetings!" in lines
    assert any(line.startswith("server got 'Greetings!' from ") for line in lines)
