"""Security of what metanlp reads: the inventory of deserialisation and code-loading sites in the
package (docs/security.md lists them), and learner folders crafted to run code or reach outside
their folder, loaded from disk and from a Hub repo (a local stand-in server)."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from metanlp.api import MetaLearner
from metanlp.models import default_model_path

PACKAGE = Path(__file__).resolve().parents[1] / "metanlp"
DOC = Path(__file__).resolve().parents[1] / "docs" / "security.md"


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func)


def test_no_unsafe_deserialisation_or_remote_code_in_the_package():
    """No pickle, no unsafe YAML, no torch.load without weights_only=True, no remote code, no
    eval/exec anywhere in metanlp/: a new site fails here and must be reviewed (and listed in
    docs/security.md)."""
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        where = path.relative_to(PACKAGE.parent)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                if any(
                    n.split(".")[0] in ("pickle", "dill", "joblib", "cloudpickle") for n in names
                ):
                    problems.append(f"{where}:{node.lineno} imports a pickle library")
        for call, name in _calls(tree):
            keywords = {k.arg: k.value for k in call.keywords}
            if name in ("eval", "exec", "compile", "__import__"):
                problems.append(f"{where}:{call.lineno} calls {name}")
            if name.endswith("yaml.load") or name.endswith("yaml.unsafe_load"):
                problems.append(f"{where}:{call.lineno} {name} (use yaml.safe_load)")
            if name.endswith("torch.load"):
                safe = keywords.get("weights_only")
                if not (isinstance(safe, ast.Constant) and safe.value is True):
                    problems.append(f"{where}:{call.lineno} torch.load without weights_only=True")
            remote = keywords.get("trust_remote_code")
            if remote is not None and not (
                isinstance(remote, ast.Constant) and remote.value is False
            ):
                problems.append(f"{where}:{call.lineno} trust_remote_code={ast.unparse(remote)}")
            if re.fullmatch(r"(\w+\.)*Auto\w+\.from_pretrained", name) and remote is None:
                problems.append(f"{where}:{call.lineno} {name} without trust_remote_code=False")
            if name.endswith("np.load") and "allow_pickle" in keywords:
                problems.append(f"{where}:{call.lineno} np.load(allow_pickle=...)")
    assert not problems, problems


def test_the_security_page_lists_every_reader():
    """docs/security.md names each function that reads user or Hub files, so the list is kept."""
    text = DOC.read_text(encoding="utf-8")
    readers = [
        "safetensors", "yaml.safe_load", "json", "load_from_disk", "PeftConfig.from_pretrained",
        "AutoConfig", "AutoTokenizer", "snapshot_download", "allow_patterns", "check_base_model",
        "LEARNER_FILE_PATTERNS", "corpus_path", "write_folder", "trust_remote_code",
        "weights_only",
    ]  # fmt: skip
    missing = [r for r in readers if r not in text]
    assert not missing, missing


_EVIL_MODULE = """
from pathlib import Path
Path({marker!r}).write_text("code from a downloaded learner ran")
"""


def _edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


# Each trap makes transformers import ``evil.py`` (which writes a marker file) if it is allowed
# to: an ``auto_map`` in the encoder config (with a type transformers ships and one it does not,
# which is when transformers asks "run the custom code? [y/N]"), in the tokenizer config (with a
# custom tokenizer class, pointing at this folder or at a second repo), or a custom class alone.
TRAPS = {
    "encoder-auto_map-bert": ("encoder/config.json", {"auto_map": {"AutoModel": "evil.EvilModel"}}),
    "encoder-auto_map-custom-type": (
        "encoder/config.json",
        {"model_type": "evil-bert", "auto_map": {"AutoConfig": "evil.EvilConfig",
                                                 "AutoModel": "evil.EvilModel"}},
    ),
    "tokenizer-auto_map": (
        "tokenizer_config.json",
        {"tokenizer_class": "EvilTokenizer", "auto_map": {"AutoTokenizer": ["evil.EvilTokenizer", None]}},
    ),
    "tokenizer-auto_map-other-repo": (
        "tokenizer_config.json",
        {"tokenizer_class": "EvilTokenizer",
         "auto_map": {"AutoTokenizer": ["mallory/code--evil.EvilTokenizer", None]}},
    ),
    "tokenizer-custom-class": ("tokenizer_config.json", {"tokenizer_class": "EvilTokenizer"}),
    "plain-encoder-custom-type": (
        "config.json",
        {"model_type": "evil-bert", "auto_map": {"AutoConfig": "evil.EvilConfig",
                                                 "AutoModel": "evil.EvilModel"}},
    ),
}  # fmt: skip


def _booby_trap(folder: Path, trap: str, marker: Path) -> Path:
    """Set one of `TRAPS` in a copy of a learner (or, for ``plain-encoder-*``, of its encoder
    folder, loaded as a base encoder) with ``evil.py`` beside every config."""
    target, changes = TRAPS[trap]
    if trap.startswith("plain-encoder"):
        folder = folder / "encoder"
        shutil.copy(default_model_path() / "tokenizer.json", folder)
        shutil.copy(default_model_path() / "tokenizer_config.json", folder)
    for where in (folder, folder / "encoder"):
        if where.is_dir():
            (where / "evil.py").write_text(_EVIL_MODULE.format(marker=str(marker)))
    _edit_json(folder / target, **changes)
    return folder


@pytest.fixture(scope="module")
def full_learner(tmp_path_factory, single_thread):
    """A learner whose folder holds full encoder weights (``encoder/``), as one whose encoder
    layers were meta-learned does: the part of a learner that transformers itself reads."""
    torch.manual_seed(0)
    learner = MetaLearner.from_pretrained(device="cpu")  # Proto-MAML on the top layer
    learner.config.meta_trained = True  # its top layer then counts as meta-learned weights
    with torch.no_grad():
        for name in learner.algorithm.outer_names:
            learner.model.get_parameter(name).add_(1e-3)
    folder = learner.save_pretrained(tmp_path_factory.mktemp("full") / "learner")
    assert (folder / "encoder" / "config.json").is_file()
    return learner, folder


LOAD_EACH = """
import sys
from metanlp import MetaLearner
for path in sys.argv[1:]:
    try:
        MetaLearner.from_pretrained(path, device="cpu")
        print("loaded")
    except Exception as err:
        print(f"{type(err).__name__}: {err}".replace("\\n", " | "))
"""


def test_a_learner_or_encoder_that_asks_for_code_is_refused_and_none_runs(full_learner, tmp_path):
    """Every trap is refused with one line naming the file and the key, even when the user
    would answer "y" to transformers' prompt (stdin says yes): no code runs."""
    _, folder = full_learner
    marker = tmp_path / "ran.txt"
    paths = [
        _booby_trap(Path(shutil.copytree(folder, tmp_path / trap)), trap, marker) for trap in TRAPS
    ]
    proc = subprocess.run([sys.executable, "-c", LOAD_EACH, *map(str, paths)], input="y\n" * 20,
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert not marker.exists(), lines
    assert len(lines) == len(TRAPS), proc.stdout
    for trap, line in zip(TRAPS, lines, strict=True):
        target, changes = TRAPS[trap]
        key = "auto_map" if "auto_map" in changes else "tokenizer_class"
        assert line.startswith("RemoteCodeError: "), (trap, line)
        assert Path(target).name in line and key in line and "trust_remote_code=False" in line


def test_a_clean_learner_still_loads_exactly(full_learner):
    learner, folder = full_learner
    loaded = MetaLearner.from_pretrained(folder, device="cpu")
    for name, value in learner.model.state_dict().items():
        assert torch.equal(value, loaded.model.state_dict()[name]), name


LOAD = """
import sys
from metanlp import MetaLearner
MetaLearner.from_pretrained(sys.argv[1], device="cpu")
print("loaded")
"""


def test_a_hub_learner_with_remote_code_is_refused_without_running_it(
    full_learner, tmp_path, monkeypatch
):
    """A Hub learner whose encoder has a custom type and whose tokenizer config points at code
    in a *second* repo: the code is never downloaded, nothing runs even with "y" on stdin, the
    load fails with one line, and every downloaded file stays inside the Hub cache."""
    from hub_server import FakeHub
    from huggingface_hub import CommitOperationAdd, HfApi, constants

    from metanlp.hub import push_folder

    _, folder = full_learner
    upload = Path(shutil.copytree(folder, tmp_path / "upload"))
    marker = tmp_path / "ran.txt"
    _booby_trap(upload, "encoder-auto_map-custom-type", marker)
    _booby_trap(upload, "tokenizer-auto_map-other-repo", marker)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    cache = tmp_path / "hf"
    with FakeHub() as hub:
        push_folder(upload, "mallory/trap", token="t", endpoint=hub.url)
        api = HfApi(endpoint=hub.url, token="t")
        api.create_repo("mallory/code", exist_ok=True)
        code = _EVIL_MODULE.format(marker=str(marker)).encode()
        api.create_commit("mallory/code", commit_message="code",
                          operations=[CommitOperationAdd("evil.py", code)])  # fmt: skip
        env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0",
               "HF_HOME": str(cache), "HF_TOKEN": "t"}  # fmt: skip
        proc = subprocess.run([sys.executable, "-c", LOAD, "mallory/trap"], input="y\n" * 20,
                              capture_output=True, text=True, env=env, timeout=300,
                              cwd=tmp_path)  # fmt: skip
    assert proc.returncode != 0 and "loaded" not in proc.stdout
    assert "RemoteCodeError" in proc.stderr and "auto_map" in proc.stderr, proc.stderr[-3000:]
    assert not marker.exists()
    fetched = [p for method, p, _ in hub.requests if "/resolve/" in p and method == "GET"]
    assert fetched and not [p for p in fetched if p.endswith(".py")]
    assert "evil.py" not in hub.repos["mallory/trap"]["files"]  # push left the code file out
    outside = [p for p in tmp_path.iterdir() if p.name not in ("upload", "hf")]
    assert outside == [], outside  # nothing written next to the cache (the cwd)


def test_a_hub_config_cannot_point_the_loader_at_local_files(full_learner, tmp_path, monkeypatch):
    """A learner without ``encoder/`` names its base by Hub id; a crafted config that names a
    path on this machine (absolute, or escaping with ..) is refused before anything is read."""
    from metanlp.files import CorruptFileError

    _, folder = full_learner
    for base in ("/etc", "../../elsewhere", str(folder / "encoder")):
        crafted = Path(shutil.copytree(folder, tmp_path / f"c{abs(hash(base))}"))
        shutil.rmtree(crafted / "encoder")
        config = json.loads((crafted / "metanlp_config.json").read_text())
        config["base_model"] = base
        (crafted / "metanlp_config.json").write_text(json.dumps(config))
        with pytest.raises(CorruptFileError, match="not a Hub id"):
            MetaLearner.from_pretrained(crafted, device="cpu")
