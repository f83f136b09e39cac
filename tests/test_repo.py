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
