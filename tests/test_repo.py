"""The repository's promises to a newcomer: the README's test command is exactly what CI runs."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    return [line for b in blocks[:2] for line in b.splitlines() if line and not line.startswith("#")]


def test_readme_has_two_setup_commands_and_ci_runs_the_test_one():
    demo, tests = _readme_commands()
    assert demo.endswith("r4t demo")
    assert "pytest" in tests
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert tests in ci


def test_shipped_datasets_carry_their_notices():
    for name in ("polyvore", "playlists"):
        folder = ROOT / "r4t" / "data" / "builtin" / name
        assert "licen" in (folder / "NOTICE.md").read_text().lower()
    assert "MIT" in (ROOT / "r4t/data/builtin/playlists/NOTICE.md").read_text()


def _slug(heading: str) -> str:
    """A Markdown heading's anchor as GitHub renders it."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_readme_is_short_and_every_link_in_the_docs_resolves():
    """README.md stays a five-minute read; every relative link in it and in docs/ names a file of the repository
    and, with #anchor, a heading of that file."""
    assert len((ROOT / "README.md").read_text()) <= 12_000
    pages = [ROOT / "README.md", ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+://", target):
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and anchor not in {_slug(h) for h in re.findall(r"^#+ (.*)$", file.read_text(), re.MULTILINE)}:
                broken.append(f"{page.name}: {target} (no such heading)")
    assert broken == []


def test_the_project_cites_no_document_outside_the_repository():
    """Design notes and paper summaries that live outside the repository are not cited by name: the project's
    own account is docs/architecture.md."""
    outside = ("DESIGN" + ".md", "PAPER" + ".md")
    files = [p for p in ROOT.rglob("*") if p.suffix in {".py", ".md", ".yaml", ".sh", ".toml"}
             and not {".venv", "runs", ".git"} & set(p.relative_to(ROOT).parts)]
    cited = [f"{p.relative_to(ROOT)}: {name}" for p in files for name in outside if name in p.read_text()]
    assert cited == []
