"""The README's first API example runs as printed right after `make demo` (no meta-trained
learner needed), and every results file the documentation names exists."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def _first_python_block(text: str) -> str:
    return re.search(r"```python\n(.*?)```", text, re.S).group(1)


def test_first_readme_example_runs_after_the_two_commands():
    code = _first_python_block((ROOT / "README.md").read_text(encoding="utf-8"))
    assert "from_pretrained()" in code  # the packaged encoder: nothing to train or download first
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    predicted = ast.literal_eval(run.stdout.strip().splitlines()[-1])
    assert len(predicted) == 2 and set(predicted) <= {"positive", "negative", "neutral"}


def test_every_results_file_named_in_the_docs_exists():
    docs = [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *(ROOT / "docs").glob("*.md")]
    missing = []
    for doc in docs:
        text = doc.read_text(encoding="utf-8")
        # `git show <commit>:benchmarks/results/x.md` names an earlier run kept in git history.
        text = re.sub(r"git show [0-9a-f]+:\S+", "", text)
        for name in re.findall(r"results/([\w.-]+\.(?:md|json|png))", text):
            if not (RESULTS / name).is_file():
                missing.append(f"{doc.relative_to(ROOT)}: {name}")
    assert missing == []
