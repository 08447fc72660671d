"""The documentation site's sources: what the strict build in CI cannot see.

``scripts/docs.sh`` (run by ``.ci/run``) builds the site with warnings as
errors, which checks links, anchors, snippets and docstrings. These tests check
the rest, without building: the code cites the wire protocol page by anchors
that exist, the protocol document that is not in the repository is cited
nowhere, every page of the nav exists and every page is in the nav, and the
home page's example runs.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from helpers import UNIT

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PROTOCOL_PAGE = DOCS / "topics" / "protocol.md"
# the unpublished reference the code used to cite (spelled in two parts so that
# this file does not cite it either)
OLD_REFERENCE = "PROTOCOL" + ".md"


def sources() -> list[Path]:
    """Every text file the docs and the code are written in."""
    files = [ROOT / "README.md", ROOT / "mkdocs.yml"]
    for folder, pattern in [("src", "*.py"), ("tests", "*.py"), ("examples", "*.py"),
                            ("docs", "*.md")]:
        files += sorted((ROOT / folder).rglob(pattern))
    return [f for f in files if "node_modules" not in f.parts]


def nav_pages() -> list[str]:
    """The pages listed in the ``nav`` of mkdocs.yml, in order."""
    text = (ROOT / "mkdocs.yml").read_text()
    nav = text.split("\nnav:\n", 1)[1]
    pages = re.findall(r"^\s+- (?:[^:\n]+: )?(\S+\.md)\s*$", nav, re.M)
    assert pages, "no page found in the nav"
    return pages


def test_the_old_protocol_document_is_cited_nowhere() -> None:
    citing = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in sources()
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if OLD_REFERENCE in line
    ]
    assert citing == [], "cite docs/topics/protocol.md#<anchor> instead"


def test_cited_protocol_anchors_exist() -> None:
    anchors = set(re.findall(r"\{#([\w-]+)\}", PROTOCOL_PAGE.read_text()))
    assert {"frames", "write-checks", "differences"} <= anchors
    cited: dict[str, list[str]] = {}
    for path in sources():
        for number, line in enumerate(path.read_text().splitlines(), 1):
            # the page's path, then "#" and an anchor; more ", #anchor" may follow
            for found in re.finditer(r"protocol\.md#([\w-]+)((?:, #[\w-]+)*)", line):
                for anchor in [found[1], *re.findall(r"#([\w-]+)", found[2])]:
                    cited.setdefault(anchor, []).append(f"{path.relative_to(ROOT)}:{number}")
    assert len(cited) >= 15, cited  # the code really cites the page
    missing = {anchor: where for anchor, where in cited.items() if anchor not in anchors}
    assert missing == {}, f"anchors cited but not on {PROTOCOL_PAGE.relative_to(ROOT)}"


def test_every_nav_page_exists_and_every_page_is_in_the_nav() -> None:
    pages = nav_pages()
    assert len(pages) == len(set(pages)), "a page is listed twice"
    assert [page for page in pages if not (DOCS / page).is_file()] == []
    on_disk = sorted(str(path.relative_to(DOCS)) for path in DOCS.rglob("*.md"))
    assert sorted(pages) == on_disk


def test_home_page_example_runs() -> None:
    home = (DOCS / "index.md").read_text()
    code = re.search(r"```python\n(.*?)```", home, re.S)
    assert code is not None
    lines = [line for line in code[1].splitlines() if line.strip()]
    assert len(lines) <= 22, "the home page promises an example of about 20 lines"
    assert '"127.0.0.1", 8080' in code[1]
    out = subprocess.run(
        [sys.executable, "-c", code[1].replace('"127.0.0.1", 8080', '"127.0.0.1", 0')],
        capture_output=True, text=True, timeout=30 * UNIT,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["client got: echo: Greetings!", "ask returned: echo: hi"]
