"""Defects a reliability probe found (issue 20): data loss on save, silent loads of incomplete or
corrupt learners, raw tracebacks that name no file, writers killed mid-write, resumes that ignore
a changed config, and a few input checks. Each test fails on the code before the fix.

The learners are the real MiniLM; corrupted copies of one saved learner stand in for damaged
downloads; killed writers are real processes killed with SIGKILL.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from text_examples import IOB2_TAGS, WORDS

from metanlp.api import MetaLearner

TEXTS = ["The bank raised rates", "Shares fell", "The team won", "He scored twice"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory, single_thread):
    """A Meta-SGD learner on LoRA (adapter, head and inner rates all saved) and its folder."""
    torch.manual_seed(1)
    learner = MetaLearner.from_pretrained(
        None,
        algorithm="metasgd",
        adapt="lora",
        adapt_options={"lora_r": 2},
        algorithm_config={"inner_steps": 1, "inner_lr": 1e-2, "first_order": True},
        max_length=32,
        device="cpu",
    )
    folder = learner.save_pretrained(tmp_path_factory.mktemp("saved") / "learner")
    return learner, folder


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ---- 1. save_pretrained never deletes what is not a learner -----------------------------------
def test_save_refuses_to_replace_what_is_not_a_learner(saved, tmp_path):
    learner, _ = saved
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match=r"notes\.txt.*overwrite=True"):
        learner.save_pretrained(mine)
    assert (mine / "notes.txt").read_text() == "keep me"
    a_file = tmp_path / "file.txt"
    a_file.write_text("data")
    with pytest.raises(FileExistsError, match="is a file"):
        learner.save_pretrained(a_file)
    assert a_file.read_text() == "data"
    assert _names(tmp_path) == ["file.txt", "mine"]

    empty = tmp_path / "empty"
    empty.mkdir()
    learner.save_pretrained(empty)  # an empty folder
    learner.save_pretrained(empty)  # a learner folder is replaced
    learner.save_pretrained(a_file, overwrite=True)
    learner.save_pretrained(mine, overwrite=True)
    for folder in (empty, a_file, mine):
        assert (folder / "metanlp_config.json").is_file()
    assert not (mine / "notes.txt").exists()
    assert _names(tmp_path) == ["empty", "file.txt", "mine"]  # no .old-* / .tmp-* left


def test_a_folder_is_a_learner_only_if_it_holds_learner_files_alone(saved, tmp_path, monkeypatch):
    """A project folder with any ``metanlp_config.json`` is not a learner to replace, and a
    learner the user put files into is only replaced with overwrite=True; saving to the current
    folder is refused with one line instead of EBUSY."""
    learner, folder = saved
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "src" / "main.py").write_text("print('mine')")
    (project / "metanlp_config.json").write_text("{}")
    with pytest.raises(FileExistsError, match=r"\['src'\].*overwrite=True"):
        learner.save_pretrained(project)
    assert (project / "src" / "main.py").read_text() == "print('mine')"

    mine = Path(shutil.copytree(folder, tmp_path / "learner"))
    (mine / "notes.txt").write_text("keep me")
    (mine / "encoder").mkdir()
    (mine / "encoder" / "train.log").write_text("keep me too")
    with pytest.raises(FileExistsError, match=r"2 other entries.*encoder/train\.log.*notes\.txt"):
        learner.save_pretrained(mine)
    assert (mine / "notes.txt").read_text() == "keep me"
    learner.save_pretrained(mine, overwrite=True)
    assert not (mine / "notes.txt").exists()
    learner.save_pretrained(mine)  # a learner alone is replaced as before

    monkeypatch.chdir(mine)
    for here in (".", mine, tmp_path):
        with pytest.raises(ValueError, match="current folder"):
            learner.save_pretrained(here, overwrite=True)
    assert (mine / "metanlp_config.json").is_file()


# ---- 2 and 3. incomplete or corrupt learners fail, naming the file ----------------------------
def _edit_tensors(path: Path, edit) -> None:
    tensors = load_file(str(path))
    save_file(edit(tensors), str(path))


def _half(tensors):
    names = sorted(tensors)
    return {k: tensors[k] for k in names[: len(names) // 2]}


def _first_nan(tensors):
    first = sorted(tensors)[0]
    tensors[first] = tensors[first].clone()
    tensors[first].view(-1)[0] = float("nan")
    return tensors


def _extra(tensors):
    return {**tensors, "base_model.model.encoder.layer.9.lora_A.weight": torch.zeros(2, 384)}


def _wrong_head(tensors):
    return {"head.weight": torch.zeros(4, 384), "head.bias": torch.zeros(4)}


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _set_config(key, value):
    def edit(folder: Path) -> None:
        path = folder / "metanlp_config.json"
        config = json.loads(path.read_text())
        config[key] = value
        path.write_text(json.dumps(config))

    return edit


def _local_base(folder: Path) -> None:
    from metanlp.models import default_model_path

    _set_config("base_model", str(default_model_path()))(folder)


ADAPTER = "adapter/adapter_model.safetensors"
CORRUPTIONS = [
    ("half-lora", lambda d: _edit_tensors(d / ADAPTER, _half), ADAPTER, "lacks"),
    ("extra-lora", lambda d: _edit_tensors(d / ADAPTER, _extra), ADAPTER, "does not have"),
    ("nan-lora", lambda d: _edit_tensors(d / ADAPTER, _first_nan), ADAPTER, "NaN"),
    ("truncated-lora", lambda d: _truncate(d / ADAPTER), ADAPTER, "truncated or corrupt"),
    ("nan-head", lambda d: _edit_tensors(d / "head.safetensors", _first_nan), "head.safetensors",
     "NaN"),
    ("wrong-shape-head", lambda d: _edit_tensors(d / "head.safetensors", _wrong_head),
     "head.safetensors", r"has shape \(4,"),
    ("empty-head", lambda d: (d / "head.safetensors").write_bytes(b""), "head.safetensors",
     "empty"),
    ("no-inner-lrs", lambda d: (d / "inner_lrs.safetensors").unlink(), "inner_lrs.safetensors",
     "missing"),
    ("nan-inner-lrs", lambda d: _edit_tensors(d / "inner_lrs.safetensors", _first_nan),
     "inner_lrs.safetensors", "NaN"),
    ("config-not-json", lambda d: (d / "metanlp_config.json").write_text("{"),
     "metanlp_config.json", "not valid JSON"),
    ("config-bad-value", _set_config("pooling", "max"), "metanlp_config.json", "pooling='max'"),
    ("tokenizer-not-json", lambda d: (d / "tokenizer.json").write_text("{"), "tokenizer",
     "cannot be read"),
    ("no-tokenizer-json", lambda d: (d / "tokenizer.json").unlink(), "tokenizer.json",
     "missing.*every text would encode to \\[UNK\\]"),
    ("no-tokenizer-config", lambda d: (d / "tokenizer_config.json").unlink(),
     "tokenizer_config.json", "missing"),
    ("max-length-over-positions", _set_config("max_length", 600), "metanlp_config.json",
     "max_length.*=600 is more than the 512 positions"),
    ("no-adapter-folder", lambda d: shutil.rmtree(d / "adapter"), "adapter/adapter_config.json",
     "missing.*adapt='lora'"),
    ("config-nested-too-deep", lambda d: (d / "metanlp_config.json").write_text("[" * 100_000),
     "metanlp_config.json", "too deeply"),
    ("base-model-local-path", _local_base, "metanlp_config.json", "not a Hub id"),
    ("base-model-escape", _set_config("base_model", "../../elsewhere"), "metanlp_config.json",
     "not a Hub id"),
]  # fmt: skip


@pytest.mark.parametrize(
    "corrupt,file,match", [c[1:] for c in CORRUPTIONS], ids=[c[0] for c in CORRUPTIONS]
)
def test_damaged_learner_fails_naming_the_file(saved, tmp_path, corrupt, file, match):
    _, folder = saved
    copy = Path(shutil.copytree(folder, tmp_path / "learner"))
    corrupt(copy)
    with pytest.raises((ValueError, OSError), match=match) as info:
        MetaLearner.from_pretrained(copy, device="cpu")
    assert str(copy) in str(info.value) and file in str(info.value)


class _Messages(logging.Handler):
    """Collects what Transformers logs while loading weights (where its LOAD REPORT goes)."""

    def __init__(self) -> None:
        super().__init__()
        self.text = ""

    def emit(self, record: logging.LogRecord) -> None:
        self.text += record.getMessage() + "\n"


def test_load_report_only_for_real_mismatches(tmp_path):
    """The packaged MiniLM loads without Transformers' report of its unused pooler; a folder
    that lost weights is still reported, and refused when loaded strictly (a learner's own
    encoder/ folder) instead of being randomly initialised."""
    from metanlp.models import load_encoder

    messages = _Messages()
    transformers_logger = logging.getLogger("transformers.modeling_utils")
    transformers_logger.addHandler(messages)
    try:
        loaded = load_encoder()
        assert "LOAD REPORT" not in messages.text
        folder = tmp_path / "encoder"
        loaded.model.save_pretrained(str(folder))
        loaded.tokenizer.save_pretrained(str(folder))
        _edit_tensors(
            folder / "model.safetensors",
            lambda t: {k: v for k, v in t.items() if "layer.0.attention.self.query" not in k},
        )
        load_encoder(folder)  # any encoder: reported, not refused
        assert "LOAD REPORT" in messages.text
        assert "layer.0.attention.self.query.weight" in messages.text
    finally:
        transformers_logger.removeHandler(messages)
    with pytest.raises(ValueError, match=r"lacks 2 weights") as info:
        load_encoder(folder, strict=True)
    assert str(folder) in str(info.value)


@pytest.mark.parametrize("layers,match", [(3, r"also layers \[3, 4, 5\], which would be dropped"),
                                          (8, r"no weights for layers \[6, 7\]")])  # fmt: skip
def test_a_config_whose_layer_count_is_not_the_weights_is_refused(tmp_path, layers, match):
    """num_hidden_layers edited to 3 (weights for 6) loaded 3 layers with only transformers'
    table printed; 8 would add two random layers. Both fail naming the folder."""
    from metanlp.files import CorruptFileError
    from metanlp.models import default_model_path, load_encoder

    folder = Path(shutil.copytree(default_model_path(), tmp_path / "encoder"))
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "num_hidden_layers": layers}))
    with pytest.raises(CorruptFileError, match=match) as info:
        load_encoder(folder)
    assert f"num_hidden_layers={layers}" in str(info.value) and str(folder) in str(info.value)


def test_an_encoder_folder_without_its_vocabulary_is_refused(tmp_path):
    """Without tokenizer.json and vocab.txt transformers builds a tokenizer of the 5 special
    tokens, and every text encodes to [UNK]: the vocabulary must match the embedding rows."""
    from metanlp.models import default_model_path, load_encoder

    folder = Path(shutil.copytree(default_model_path(), tmp_path / "encoder"))
    (folder / "tokenizer.json").unlink()
    (folder / "vocab.txt").unlink()
    with pytest.raises(ValueError, match=r"tokenizer has 5 tokens but .* 30522 rows") as info:
        load_encoder(folder)
    assert str(folder) in str(info.value)


def test_max_length_beyond_the_positions_is_refused_up_front():
    with pytest.raises(
        ValueError, match=r"max_length=600 is more than the 512 positions.*at most 512"
    ):
        MetaLearner.from_pretrained(None, max_length=600, device="cpu")


# ---- 4. one atomic writer: fsync, no window without a copy, leftovers cleaned -------------------
@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name fsynced fds")
def test_learner_save_fsyncs_every_file_and_folder(saved, tmp_path, monkeypatch):
    learner, _ = saved
    synced: list[Path] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(Path(os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    root = tmp_path.resolve()

    monkeypatch.setattr(os, "fsync", spy)
    folder = learner.save_pretrained(tmp_path / "learner")
    monkeypatch.undo()
    # Files are synced inside the temporary folder, before it is renamed to `learner`.
    written = set()
    for path in synced:
        if not path.is_relative_to(root):
            continue
        rel = path.relative_to(root)
        if rel.parts and rel.parts[0].startswith(".learner.tmp-"):
            rel = Path("learner", *rel.parts[1:])
        written.add(rel.as_posix())
    expected = {p.relative_to(tmp_path).as_posix() for p in folder.rglob("*")}
    assert expected | {"learner", "."} <= written  # every file and folder, and the parent


_KILLED_BETWEEN_RENAMES = """
import os, sys, time
from pathlib import Path
from metanlp import MetaLearner
source, target, flag = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
learner = MetaLearner.from_pretrained(source, device="cpu")
real_replace = os.replace
def replace(src, dst, *args, **kwargs):
    real_replace(src, dst, *args, **kwargs)
    if Path(src) == target:  # the previous learner has just been moved aside
        flag.write_text("between the renames")
        time.sleep(300)
os.replace = replace
learner.save_pretrained(target)
"""


def test_kill_between_the_renames_keeps_the_learner(saved, tmp_path):
    learner, folder = saved
    target = tmp_path / "run" / "learner"
    shutil.copytree(folder, target)
    flag = tmp_path / "flag"
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_BETWEEN_RENAMES, str(folder), str(target), str(flag)]
    )
    deadline = time.time() + 300
    while not flag.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.kill()
    proc.wait()
    assert flag.exists(), "the writer never reached the window between its renames"
    assert not target.exists()  # the kill hit the window: only the moved-aside copy is left
    loaded = MetaLearner.from_pretrained(target, device="cpu")
    assert torch.equal(loaded.model.head.weight, learner.model.head.weight)
    assert _names(target.parent) == ["learner"]  # the dead writer's folders are gone


def test_dead_writers_leftovers_are_cleaned_and_live_ones_kept(tmp_path):
    from metanlp.files import recover_folder, write_folder

    dead = _dead_pid()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        moved_aside = tmp_path / f".best.old-{dead}-0a1b2c3d"
        moved_aside.mkdir()
        (moved_aside / "w.json").write_text("old")
        (tmp_path / f".best.tmp-{dead}-2c3d4e5f").mkdir()
        (tmp_path / f".best.tmp-{live.pid}-4e5f6a7b").mkdir()  # a writer still at work
        for name in USERS_LOOKALIKES:
            (tmp_path / name).mkdir()
            (tmp_path / name / "mine.txt").write_text("a user's file")
        recover_folder(tmp_path / "best")
        assert (tmp_path / "best" / "w.json").read_text() == "old"
        assert _names(tmp_path) == sorted(
            [f".best.tmp-{live.pid}-4e5f6a7b", "best", *USERS_LOOKALIKES]
        )
        write_folder(tmp_path / "best", lambda d: (d / "w.json").write_text("new"))
        assert (tmp_path / "best" / "w.json").read_text() == "new"
        assert _names(tmp_path) == sorted(
            [f".best.tmp-{live.pid}-4e5f6a7b", "best", *USERS_LOOKALIKES]
        )
    finally:
        live.kill()
        live.wait()
    recover_folder(tmp_path / "best")
    assert _names(tmp_path) == sorted(["best", *USERS_LOOKALIKES])
    for name in USERS_LOOKALIKES:
        assert (tmp_path / name / "mine.txt").read_text() == "a user's file"


# Names like our writer's leftovers that it never makes: a user's versions and notes.
USERS_LOOKALIKES = [
    "best.old-v1", "best.tmp-experiment", "best.old-2024.tar", "best.tmp-k3j_x8a",
    ".best.old-99999999", ".best.tmp-123-xyz", ".best.old-123-0a1b",
    ".best.tmp-0-0a1b2c3d", "best.old-123-0a1b2c3d",
]  # fmt: skip


def test_look_alikes_of_leftovers_are_never_moved_or_deleted(saved, tmp_path):
    """A user's ``learner.old-v1/`` beside a learner is theirs: loading and saving the learner
    leave every look-alike in place, and with no learner present none is renamed to it."""
    learner, folder = saved
    for name in ["learner.old-v1", "learner.tmp-experiment", "learner.old-2024.tar"]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "mine.txt").write_text("keep me")
    with pytest.raises(FileNotFoundError):
        MetaLearner.from_pretrained(tmp_path / "learner", device="cpu")
    shutil.copytree(folder, tmp_path / "learner")
    MetaLearner.from_pretrained(tmp_path / "learner", device="cpu")
    learner.save_pretrained(tmp_path / "learner")
    assert _names(tmp_path) == [
        "learner", "learner.old-2024.tar", "learner.old-v1", "learner.tmp-experiment"
    ]  # fmt: skip
    for name in ["learner.old-v1", "learner.tmp-experiment", "learner.old-2024.tar"]:
        assert (tmp_path / name / "mine.txt").read_text() == "keep me"


def test_failed_write_keeps_the_previous_folder(tmp_path):
    from metanlp.files import write_folder

    write_folder(tmp_path / "best", lambda d: (d / "w.json").write_text("old"))

    def broken(folder: Path) -> None:
        (folder / "w.json").write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_folder(tmp_path / "best", broken)
    assert (tmp_path / "best" / "w.json").read_text() == "old"
    assert _names(tmp_path) == ["best"]


# ---- 5. resuming: a changed config is refused, TensorBoard and metrics.jsonl log each step once -
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, single_thread):
    """A 4-step run with checkpoints at steps 2 and 4, logged to JSONL and TensorBoard."""
    from accelerate.state import AcceleratorState
    from trainer_helpers import build_corpus, meta_parameters, tiny_config

    from metanlp.training import MetaTrainer

    data = tmp_path_factory.mktemp("corpora")
    build_corpus(data)
    out = tmp_path_factory.mktemp("runs") / "full"
    AcceleratorState._reset_state()
    trainer = MetaTrainer(
        tiny_config(data, out, save_every=2, save_total_limit=3, report_to=["tensorboard"])
    )
    trainer.train()
    AcceleratorState._reset_state()
    return data, out, meta_parameters(trainer)


def _interrupted_copy(full: Path, to: Path) -> Path:
    """The run folder as it was when checkpoint-2 was the newest (killed during step 3 or 4)."""
    shutil.copytree(full, to)
    shutil.rmtree(to / "checkpoint-4")
    return to


def _resumed_trainer(data: Path, run: Path, **overrides):
    from accelerate.state import AcceleratorState
    from trainer_helpers import tiny_config

    from metanlp.training import MetaTrainer

    AcceleratorState._reset_state()
    return MetaTrainer(tiny_config(data, run, save_every=2, save_total_limit=3, **overrides))


def test_resume_with_a_changed_config_is_refused(finished_run, tmp_path):
    data, full, _ = finished_run
    run = _interrupted_copy(full, tmp_path / "run")
    trainer = _resumed_trainer(data, run, optimizer={"lr": 1e-2})
    with pytest.raises(ValueError, match=r"optimizer\.lr: 0\.003 -> 0\.01.*new run"):
        trainer.train(resume_from_checkpoint=True)


def _tensorboard_steps(run: Path, tag: str) -> list[int]:
    """Steps of ``tag`` as TensorBoard shows them: a restarted writer's SessionLog.START at step
    s hides the earlier events at steps >= s (SummaryWriter's purge_step)."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.compat.proto.event_pb2 import SessionLog

    files = sorted(
        run.glob("metanlp/events.out.tfevents.*"), key=lambda p: int(p.name.split(".")[3])
    )
    assert len(files) == 2, files
    steps: list[int] = []
    for path in files:
        for event in EventFileLoader(str(path)).Load():
            if event.HasField("session_log") and event.session_log.status == SessionLog.START:
                steps = [s for s in steps if s < event.step]
            steps += [event.step for v in event.summary.value if v.tag == tag]
    return steps


def test_resume_after_a_kill_logs_each_step_once(finished_run, tmp_path):
    from trainer_helpers import meta_parameters

    from metanlp.training.logs import read_jsonl

    data, full, expected = finished_run
    run = _interrupted_copy(full, tmp_path / "run")
    with open(run / "metrics.jsonl", "a") as handle:  # killed while logging step 3
        handle.write('{"step": 3, "split": "tra')
    dead = _dead_pid()
    os.replace(run / "best", run / f".best.old-{dead}-0a1b2c3d")  # killed between best/'s renames
    (run / f".checkpoint-3.tmp-{dead}-2c3d4e5f").mkdir()  # killed while writing a checkpoint

    trainer = _resumed_trainer(data, run, report_to=["tensorboard"])
    trainer.train(resume_from_checkpoint=True)
    for name, value in expected.items():
        assert torch.equal(value, meta_parameters(trainer)[name]), name
    assert read_jsonl(run / "metrics.jsonl") == read_jsonl(full / "metrics.jsonl")
    assert _tensorboard_steps(run, "train/query_loss") == [1, 2, 3, 4]
    assert not [p for p in run.iterdir() if ".tmp-" in p.name or ".old-" in p.name]
    assert (run / "best" / "meta_parameters.safetensors").is_file()


# A real meta-training run (the finished_run config) in a child process that SIGKILLs itself at
# one moment of a checkpoint write; the moment is found by wrapping the real os.replace,
# fsync_tree and safetensors writer of that process (nothing of metanlp is replaced).
_KILLED_RUN = r"""
import os, signal, sys
sys.path.insert(0, sys.argv[3])
import torch
torch.set_num_threads(1)
from trainer_helpers import tiny_config
import metanlp.files as files
import metanlp.training.state_io as state_io
from metanlp.training import MetaTrainer

data, out, _, moment = sys.argv[1:5]
kind, name = moment.split(":")
real_replace, real_fsync_tree, real_save = os.replace, files.fsync_tree, state_io.save_file
written = []

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def replace(src, dst, *args, **kwargs):
    real_replace(src, dst, *args, **kwargs)
    src, dst = os.path.basename(os.fspath(src)), os.path.basename(os.fspath(dst))
    if kind == "renamed" and dst == name:  # complete, before the parent fsync and pruning
        die()
    if kind == "aside" and src == name:  # the old copy moved aside, the new one not yet in
        die()

def fsync_tree(path):
    if kind == "written" and os.path.basename(os.fspath(path)).startswith(f".{name}.tmp-"):
        die()  # every file written, nothing synced or renamed
    real_fsync_tree(path)

def save_file(tensors, path, *args, **kwargs):
    real_save(tensors, path, *args, **kwargs)
    if kind == "torn" and f".{name}.tmp-" in path:
        written.append(path)
        if len(written) == 2:  # the optimiser state half on disk
            size = os.path.getsize(path)
            with open(path, "r+b") as handle:
                handle.truncate(size // 2)
            die()

os.replace, files.fsync_tree, state_io.save_file = replace, fsync_tree, save_file
MetaTrainer(tiny_config(data, out, save_every=2, save_total_limit=3)).train()
"""


@pytest.mark.parametrize(
    "moment,resumes_from",
    [
        ("torn:checkpoint-4", "checkpoint-2"),
        ("written:checkpoint-4", "checkpoint-2"),
        ("renamed:checkpoint-4", "checkpoint-4"),
        ("aside:best", "checkpoint-2"),  # best/ is rewritten at step 4 before checkpoint-4
    ],
)
def test_kill_9_during_a_checkpoint_write_then_resume_equals_the_uninterrupted_run(
    finished_run, tmp_path, moment, resumes_from
):
    """kill -9 at several moments of a real run's checkpoint writes: the newest complete
    checkpoint loads, and the resumed run ends with the uninterrupted run's weights and log."""
    from trainer_helpers import meta_parameters

    from metanlp.training import state_io as ckpt
    from metanlp.training.logs import read_jsonl

    data, full, expected = finished_run
    run = tmp_path / "run"
    tests = str(Path(__file__).parent)
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED_RUN, str(data), str(run), tests, moment],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == -9, f"the run was not killed at {moment}: {proc.stderr[-2000:]}"
    ckpt.recover_checkpoints(run)  # what train() does first: finish or drop half-written folders
    assert ckpt.latest_checkpoint(run).name == resumes_from
    trainer = _resumed_trainer(data, run)
    trainer.train(resume_from_checkpoint=True)
    assert ckpt.latest_checkpoint(run).name == "checkpoint-4"
    for name, value in expected.items():
        assert torch.equal(value, meta_parameters(trainer)[name]), name
    train_log = [r for r in read_jsonl(run / "metrics.jsonl") if r["split"] == "train"]
    assert train_log == [r for r in read_jsonl(full / "metrics.jsonl") if r["split"] == "train"]
    assert not [p for p in run.iterdir() if ".tmp-" in p.name or ".old-" in p.name]
    assert (run / "best" / "meta_parameters.safetensors").is_file()


def test_metrics_file_torn_in_the_middle_names_the_line(tmp_path):
    from metanlp.training.logs import read_jsonl

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "split": "train"}\n{"step": 2, "spl\n{"step": 3, "split": "x"}\n')
    with pytest.raises(ValueError, match=r"metrics\.jsonl:2 "):
        read_jsonl(path)


# ---- 3. other files that failed with raw tracebacks --------------------------------------------
def test_yaml_syntax_error_names_the_file_and_line(tmp_path):
    from metanlp.training.config import MetaTrainerConfig

    path = tmp_path / "broken.yaml"
    path.write_text("algorithm: maml\ndata: {train: [1, 2\n")
    with pytest.raises(ValueError, match=r"broken\.yaml is not valid YAML at line 3"):
        MetaTrainerConfig.from_yaml(path)


@pytest.mark.parametrize(
    "content,match",
    [
        ("", "is empty"),
        ("[1, 2", "not valid JSON"),
        ('{"format": "metanlp-episodes", "version": 1, "datasets": {}, "metadata": {}, '
         '"episodes": []}', "holds no episodes"),
        ('{"format": "metanlp-episodes", "version": 1, "datasets": {}, "metadata": {}, '
         '"episodes": [{"kind": "classification"}]}', "episode 0 is malformed"),
    ],
    ids=["zero-bytes", "not-json", "no-episodes", "malformed-episode"],
)  # fmt: skip
def test_bad_episode_file_names_the_file(tmp_path, content, match):
    from metanlp.episodes import load_episode_specs

    path = tmp_path / "episodes.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=match) as info:
        load_episode_specs(path)
    assert str(path) in str(info.value)


@pytest.fixture(scope="module")
def episode_file(tmp_path_factory):
    from trainer_helpers import build_corpus

    from metanlp.corpora import load_corpus
    from metanlp.episodes import ClassificationSampler, save_episodes

    data = tmp_path_factory.mktemp("corpora")
    build_corpus(data)
    dataset = load_corpus("syn", data)
    sampler = ClassificationSampler(dataset, n_way=2, k_shot=1, q_query=1, seed=0, name="syn")
    path = save_episodes(tmp_path_factory.mktemp("episodes") / "e.json", sampler.specs(2), sampler)
    return path, dataset, data, sampler


def test_an_episode_file_needs_episodes(episode_file, tmp_path):
    from metanlp.episodes import save_episodes

    *_, sampler = episode_file
    with pytest.raises(ValueError, match="at least 1"):
        save_episodes(tmp_path / "none.json", [], sampler)
    assert not (tmp_path / "none.json").exists()


def test_unknown_class_in_episode_file_is_named(episode_file, tmp_path):
    from transformers import AutoTokenizer

    from metanlp.episodes import load_episodes
    from metanlp.models import default_model_path

    path, dataset, *_ = episode_file
    data = json.loads(path.read_text())
    data["episodes"][1]["label_names"][0] = "anatomy"
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(data))
    tokenizer = AutoTokenizer.from_pretrained(str(default_model_path()))
    with pytest.raises(ValueError, match=r"episode 1 .* 'anatomy'.*'food'") as info:
        load_episodes(edited, dataset, tokenizer=tokenizer)
    assert str(edited) in str(info.value)


def test_corpus_names_stay_inside_the_data_folder(episode_file, tmp_path):
    from metanlp.corpora import CorpusError, load_corpus

    _, _, outside, _ = episode_file  # a built corpus `syn` in another folder
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    relative = os.path.relpath(outside / "syn", data_dir)
    for name in (relative, str(outside / "syn"), "."):
        with pytest.raises(CorpusError, match="inside the data folder"):
            load_corpus(name, data_dir)
    assert len(load_corpus("syn", outside)) > 0


# ---- 6. input checks ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def plain_learner(single_thread):
    torch.manual_seed(0)
    return MetaLearner.from_pretrained(device="cpu")


def test_labels_that_python_treats_as_equal_are_refused(plain_learner):
    with pytest.raises(ValueError, match=r"1 \(int\) and True \(bool\).*merge"):
        plain_learner.adapt(TEXTS, [1, 1, True, True], steps=1)


def test_control_character_only_text_is_refused(plain_learner):
    with pytest.raises(ValueError, match=r"control-character-only entries \(positions \[1\]\)"):
        plain_learner.adapt(["good", "\x00\x01\u200b", "bad", "awful"], ["a", "a", "b", "b"])


def test_ner_words_past_max_length_are_tagged_not_dropped():
    torch.manual_seed(0)
    learner = MetaLearner.from_pretrained(task="token", max_length=16, device="cpu")
    tagger = learner.adapt(WORDS, IOB2_TAGS, steps=5)
    filler = ["the"] * 14  # one sub-token each: exactly fills a window (16 minus [CLS], [SEP])
    alone = tagger.predict([WORDS[0]])[0]
    assert alone != ["O"] * 5, "the adapted tagger should tag its own support sentence"
    long = tagger.predict([filler + WORDS[0]])[0]
    assert long == tagger.predict([filler])[0] + alone


LOAD_WITH_REQUESTS = """
import sys
from metanlp import MetaLearner
MetaLearner.from_pretrained(sys.argv[1], device="cpu")
"""


def test_hub_download_fetches_only_learner_files(saved, monkeypatch, tmp_path):
    from hub_server import FakeHub
    from huggingface_hub import constants

    from metanlp.hub import push_folder

    _, folder = saved
    upload = Path(shutil.copytree(folder, tmp_path / "upload"))
    (upload / "extra").mkdir()
    (upload / "extra" / "unrelated.bin").write_bytes(b"\0" * 1000)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with FakeHub() as hub:
        push_folder(upload, "alice/big", token="t", endpoint=hub.url)
        env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0",
               "HF_HOME": str(tmp_path / "hf"), "HF_TOKEN": "t"}  # fmt: skip
        proc = subprocess.run([sys.executable, "-c", LOAD_WITH_REQUESTS, "alice/big"],
                              capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    fetched = [p for method, p, _ in hub.requests if "/resolve/" in p and method == "GET"]
    assert any(p.endswith("/head.safetensors") for p in fetched)
    assert not [p for p in fetched if "unrelated" in p]


def test_ctrl_c_writes_a_checkpoint_says_one_line_and_the_resume_is_exact(finished_run, tmp_path):
    """ctrl-C during `metanlp train` (a real run, SIGINT while step 2 runs): the step finishes,
    its checkpoint is written, the command ends with one line and status 130 (no traceback), and
    resuming from that checkpoint ends with the uninterrupted run's weights."""
    import yaml
    from trainer_helpers import meta_parameters, tiny_config

    from metanlp.training import state_io as ckpt
    from metanlp.training.logs import read_jsonl

    data, full, expected = finished_run
    run = tmp_path / "run"
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(tiny_config(data, run, save_every=2, save_total_limit=3).to_dict())
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "metanlp.cli", "train", "--config", str(config)],
                            stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)  # fmt: skip
    deadline = time.time() + 600
    while not [r for r in read_jsonl(run / "metrics.jsonl") if r["split"] == "train"]:
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read()[-3000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)  # step 1 is logged: step 2 is under way
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    assert last == (
        f"metanlp train: interrupted after step 2; checkpoint written to {run / 'checkpoint-2'}. "
        "Resume with --resume (resume_from_checkpoint=True)."
    ), stderr[-3000:]
    assert ckpt.latest_checkpoint(run).name == "checkpoint-2"
    trainer = _resumed_trainer(data, run)
    trainer.train(resume_from_checkpoint=True)
    for name, value in expected.items():
        assert torch.equal(value, meta_parameters(trainer)[name]), name


_FULL_DISK = r"""
import resource, signal, sys
import torch
from metanlp import MetaLearner
learner = MetaLearner.from_pretrained(None, device="cpu")
learner.config.meta_trained = True  # the top layer counts as meta-learned: encoder/ is written
learner.save_pretrained(sys.argv[1])
from safetensors.torch import save_file
save_file({"w": learner.model.head.weight.detach().clone()}, sys.argv[2])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.RLIM_INFINITY))
with torch.no_grad():
    learner.model.head.weight.add_(1.0)
learner.save_pretrained(sys.argv[1])
"""


def test_a_save_that_runs_out_of_space_fails_in_one_line_and_keeps_the_learner(tmp_path):
    """A real write failure (the OS refuses bytes past a 1 MiB file size limit, as a full disk
    does): the error names the folder and the fix instead of a raw SafetensorError, and the
    learner saved before is intact and nothing is left beside it."""
    folder = tmp_path / "learner"
    first = tmp_path / "first_head.safetensors"
    proc = subprocess.run([sys.executable, "-c", _FULL_DISK, str(folder), str(first)],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"metanlp.files.WriteError: Could not write {folder} ("), last
    assert "nothing was replaced" in last and "Free disk space" in last, last
    loaded = MetaLearner.from_pretrained(folder, device="cpu")
    assert torch.equal(loaded.model.head.weight.detach(), load_file(str(first))["w"])
    assert _names(tmp_path) == ["first_head.safetensors", "learner"]


def test_truncated_encoder_weights_name_the_file(tmp_path):
    from metanlp.files import CorruptFileError

    learner = MetaLearner.from_pretrained(None, device="cpu")
    learner.config.meta_trained = True
    folder = learner.save_pretrained(tmp_path / "learner")
    _truncate(folder / "encoder" / "model.safetensors")
    with pytest.raises(CorruptFileError) as info:
        MetaLearner.from_pretrained(folder, device="cpu")
    message = str(info.value)
    assert str(folder / "encoder" / "model.safetensors") in message and "\n" not in message
    assert "truncated" in message and "download it again" in message


@pytest.mark.parametrize(
    "edit,match",
    [
        (lambda e: e["support_rows"].__setitem__(0, e["support_rows"][0] + 0.7), "whole row"),
        (lambda e: e["query_rows"].__setitem__(1, e["query_rows"][0]), "more than once"),
        (lambda e: e["support_rows"].__setitem__(1, e["support_rows"][0]), "more than once"),
    ],
    ids=["float-row", "repeated-query-row", "repeated-support-row"],
)
def test_episode_files_with_float_or_repeated_rows_are_refused(data_dir, tmp_path, edit, match):
    """A float row was truncated onto another row (a support row could land in the query) and a
    repeated row counted twice: both are refused, naming the file and the episode."""
    from metanlp.corpora import load_corpus
    from metanlp.episodes import ClassificationSampler, load_episode_specs, save_episodes
    from metanlp.files import CorruptFileError

    data = load_corpus("bbc_news", data_dir)
    sampler = ClassificationSampler(data, n_way=2, k_shot=2, q_query=2, seed=0, name="bbc_news")
    path = save_episodes(
        tmp_path / "e.json", sampler.specs(2), sampler, metadata={"max_length": 64}
    )
    payload = json.loads(path.read_text())
    edit(payload["episodes"][1])
    path.write_text(json.dumps(payload))
    with pytest.raises(CorruptFileError, match=f"episode 1 is malformed.*{match}") as info:
        load_episode_specs(path)
    assert str(path) in str(info.value)
