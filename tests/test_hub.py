"""Model card contents, and `push_to_hub` with the real `HfApi` client against a local HTTP
server standing in for the Hub (no network): the repo, the files and the card that arrive."""

from __future__ import annotations

import shutil

import pytest
import torch
import yaml
from hub_server import FakeHub

from metanlp.hub import REPO_PLACEHOLDER, card_for_repo, model_card, push_folder

RESULTS = [
    {
        "method": "maml",
        "episode_set": "bbc_5w5s.json",
        "summary": {
            "accuracy": {"mean": 0.8123, "ci": 0.0211, "std": 0.1, "n": 600},
            "macro_f1": {"mean": 0.8, "ci": 0.02, "std": 0.1, "n": 600},
        },
    },
    {
        "method": "finetune",
        "episode_set": "bbc_5w5s.json",
        "summary": {
            "accuracy": {"mean": 0.61, "ci": 0.03, "std": 0.1, "n": 600},
            "macro_f1": {"mean": 0.58, "ci": 0.031, "std": 0.1, "n": 600},
        },
    },
]


def _metadata(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_model_card_metadata_and_results_table(tmp_path):
    card = model_card(
        base_model="sentence-transformers/all-MiniLM-L6-v2",
        method="maml",
        task="sequence",
        n_way=5,
        k_shot=5,
        datasets=["bbc_news", "SetFit/bbc-news"],
        results=RESULTS,
        episode_set="bbc_5w5s.json",
    )
    meta = _metadata(card)
    assert meta["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert meta["library_name"] == "metanlp"
    assert meta["pipeline_tag"] == "text-classification"
    assert meta["datasets"] == ["SetFit/bbc-news"]  # only Hub ids go in the Hub field
    assert meta["metanlp"]["n_way"] == 5 and meta["metanlp"]["k_shot"] == 5
    assert meta["metanlp"]["meta_training_data"] == ["bbc_news", "SetFit/bbc-news"]
    assert "| maml | 600 | 81.23 ± 2.11 | 80.00 ± 2.00 |" in card
    assert "| finetune | 600 | 61.00 ± 3.00 | 58.00 ± 3.10 |" in card
    # Hub-grade metadata: the base model's license and language, a model-index from the
    # learner's own (first) results, hyperparameters and library versions.
    assert (meta["license"], meta["language"]) == ("apache-2.0", "en")
    from huggingface_hub import ModelCard

    data = ModelCard(card).data
    assert [(r.metric_type, r.metric_value) for r in data.eval_results] == [
        ("accuracy", 81.23),
        ("macro_f1", 80.0),
    ]
    assert {r.task_type for r in data.eval_results} == {"text-classification"}
    assert data.eval_results[0].dataset_name == "bbc_5w5s.json"
    assert data.model_name == REPO_PLACEHOLDER and f'from_pretrained("{REPO_PLACEHOLDER}")' in card
    import transformers

    assert f"- transformers {transformers.__version__}" in card
    tuned = model_card(base_model="x/y", method="maml", task="sequence",
                       hyperparameters={"algorithm": "maml", "adapt_options": {"lora_r": 8}})  # fmt: skip
    assert '- adapt_options: `{"lora_r": 8}`' in tuned and "model-index" not in tuned
    local = model_card(base_model=str(tmp_path), method="protonet", task="token")
    assert "base_model" not in _metadata(local)  # a machine path is not a Hub id
    assert _metadata(local)["pipeline_tag"] == "token-classification"


def test_card_for_repo_names_the_repo_pushed_to():
    kwargs = {"base_model": "x/y", "method": "maml", "task": "sequence", "results": RESULTS}
    for saved_for in (None, "alice/old"):
        card = card_for_repo(model_card(**kwargs, repo_id=saved_for), "bob/new")
        assert (
            'from_pretrained("bob/new")' in card
            and _metadata(card)["model-index"][0]["name"] == "bob/new"
        )
        assert REPO_PLACEHOLDER not in card and "alice/old" not in card
    plain = model_card(base_model="x/y", method="maml", task="sequence")  # no model-index
    assert 'from_pretrained("bob/new")' in card_for_repo(plain, "bob/new")


@pytest.fixture(scope="module")
def saved_learner(tmp_path_factory):
    from metanlp.api import MetaLearner

    torch.manual_seed(0)
    learner = MetaLearner.from_pretrained()
    return learner, learner.save_pretrained(
        tmp_path_factory.mktemp("out") / "learner", results=RESULTS
    )


def test_push_to_hub_sends_every_file_and_the_card(saved_learner, monkeypatch):
    from huggingface_hub import constants

    learner, folder = saved_learner
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # pushing is explicitly online
    with FakeHub() as hub:
        url = learner.push_to_hub(
            "alice/bbc-learner", private=True, token="hf_test_token", endpoint=hub.url
        )
    assert hub.unexpected == []
    assert url.startswith(f"{hub.url}/alice/bbc-learner/commit/")
    repo = hub.repos["alice/bbc-learner"]
    assert repo["private"] is True
    assert all(h.get("authorization") == "Bearer hf_test_token" for _, _, h in hub.requests)
    local = {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }
    pushed = dict(repo["files"])
    # The card names the repo in its usage snippet; everything else is byte-identical.
    card = pushed.pop("README.md").decode()
    local.pop("README.md")
    assert pushed == local
    assert len(hub.commits) == 1  # one atomic commit
    meta = _metadata(card)
    assert meta["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert meta["metanlp"]["method"] == "protomaml" and meta["metanlp"]["meta_trained"] is False
    assert 'MetaLearner.from_pretrained("alice/bbc-learner")' in card
    assert REPO_PLACEHOLDER not in card and meta["model-index"][0]["name"] == "alice/bbc-learner"
    assert "| maml | 600 | 81.23 ± 2.11 | 80.00 ± 2.00 |" in card
    assert "algorithm: `protomaml`" in card


def test_push_existing_folder_to_an_existing_repo(saved_learner, monkeypatch):
    from huggingface_hub import constants

    _, folder = saved_learner
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with FakeHub() as hub:
        push_folder(folder, "alice/x", token="t", endpoint=hub.url)
        push_folder(folder, "alice/x", token="t", endpoint=hub.url)  # 409 from create: exist_ok
    assert len(hub.commits) == 2 and hub.unexpected == []
    assert set(hub.repos["alice/x"]["files"]) == {
        p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()
    }
    # A folder saved without a repo id gets it filled in at push (`metanlp push`).
    assert REPO_PLACEHOLDER in (folder / "README.md").read_text()
    card = hub.repos["alice/x"]["files"]["README.md"].decode()
    assert 'from_pretrained("alice/x")' in card and REPO_PLACEHOLDER not in card


def test_lora_learner_uploads_no_peft_template_card_or_local_path(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from metanlp.api import MetaLearner
    from metanlp.models import default_model_path

    learner = MetaLearner.from_pretrained(None, adapt="lora", adapt_options={"lora_r": 2})
    folder = learner.save_pretrained(tmp_path / "lora")
    assert (folder / "adapter" / "adapter_model.safetensors").is_file()
    assert not (folder / "adapter" / "README.md").exists()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with FakeHub() as hub:
        push_folder(folder, "alice/lora", token="t", endpoint=hub.url)
    files = hub.repos["alice/lora"]["files"]
    assert "adapter/README.md" not in files
    local_path = str(default_model_path().resolve()).encode()
    assert [name for name, data in files.items() if local_path in data] == []


def test_push_errors_are_clear(saved_learner, tmp_path):
    _, folder = saved_learner
    with pytest.raises(RuntimeError, match="HF_HUB_OFFLINE"):
        push_folder(folder, "alice/x", endpoint="http://127.0.0.1:9")
    with pytest.raises(FileNotFoundError, match="metanlp_config.json"):
        push_folder(tmp_path, "alice/x")


def test_push_uploads_the_learner_files_alone_and_follows_no_link(
    saved_learner, tmp_path, monkeypatch
):
    """A push sends the learner's own files only: not a file the user added, not what a link
    points at (a link in a learner file's place is refused), and never a folder that is not a
    learner, such as a home folder with a README.md and .ssh/."""
    from huggingface_hub import constants

    _, folder = saved_learner
    secret = tmp_path / "secret"
    secret.write_text("s3cr3t-ZQ9-token")
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_rsa").write_text("PRIVATE KEY")
    (home / "README.md").write_text("# my home")
    learner = tmp_path / "learner"
    shutil.copytree(folder, learner)
    (learner / "notes.txt").symlink_to(secret)
    (learner / "encoder").mkdir(exist_ok=True)
    (learner / "encoder" / "secret.safetensors").symlink_to(secret)
    (learner / "run.log").write_text("not the learner's")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with FakeHub() as hub:
        with pytest.raises(ValueError, match=r"secret\.safetensors is a symbolic link"):
            push_folder(learner, "alice/x", token="t", endpoint=hub.url)
        (learner / "encoder" / "secret.safetensors").unlink()
        push_folder(learner, "alice/x", token="t", endpoint=hub.url)
        with pytest.raises(FileNotFoundError, match="not a metanlp learner folder"):
            push_folder(home, "alice/home", token="t", endpoint=hub.url)
    sent = hub.repos["alice/x"]["files"]
    assert set(sent) == {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert b"s3cr3t-ZQ9" not in b"".join(sent.values())
    assert "alice/home" not in hub.repos


LOAD_FROM_HUB = """
import json, sys
from metanlp import MetaLearner
learner = MetaLearner.from_pretrained(sys.argv[1])
clf = learner.adapt(json.loads(sys.argv[2]), json.loads(sys.argv[3]))
print(json.dumps({"config": learner.config.to_dict(),
                  "proba": clf.predict_proba(json.loads(sys.argv[2])).tolist()}))
"""


def test_from_pretrained_downloads_a_pushed_learner(saved_learner, monkeypatch, tmp_path):
    """Push, then `from_pretrained("user/repo")` in a fresh process pointed at the fake Hub by
    HF_ENDPOINT (the variable users set for a private Hub): the same learner comes back."""
    import json
    import os
    import subprocess
    import sys

    import numpy as np
    from huggingface_hub import constants

    learner, _ = saved_learner
    texts = ["The bank raised rates", "Shares fell", "The team won", "He scored twice"]
    labels = ["money", "money", "sport", "sport"]
    expected = learner.adapt(texts, labels).predict_proba(texts)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with FakeHub() as hub:
        learner.push_to_hub("alice/shared", token="t", endpoint=hub.url)
        env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0",
               "HF_HOME": str(tmp_path / "hf"), "HF_TOKEN": "t"}  # fmt: skip
        proc = subprocess.run(
            [sys.executable, "-c", LOAD_FROM_HUB, "alice/shared", json.dumps(texts), json.dumps(labels)],
            capture_output=True, text=True, env=env, timeout=300,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["config"] == learner.config.to_dict()
    assert np.array_equal(np.array(out["proba"]), expected)
    assert hub.unexpected == []
    assert any(p.startswith("/alice/shared/resolve/") for _, p, _ in hub.requests)
