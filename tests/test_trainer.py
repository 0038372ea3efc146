"""MetaTrainer: config validation, checkpoints, resume = uninterrupted, precision, early stopping.

Training runs use the real MiniLM (LoRA + head, second-order MAML) on a small synthetic topic
corpus at sequence length 16, so every run takes seconds.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file
from trainer_helpers import build_corpus, meta_parameters, tiny_config

from metanlp.files import write_folder
from metanlp.training import MetaTrainer
from metanlp.training import state_io as ckpt
from metanlp.training.config import MetaTrainerConfig, OptimizerConfig
from metanlp.training.logs import plot_learning_curve, read_jsonl
from metanlp.training.utils import build_optimizer, build_scheduler


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path_factory):
    from accelerate.state import AcceleratorState

    cache = tmp_path_factory.mktemp("hf_home")
    monkeypatch.setenv("HF_HOME", str(cache))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache / "datasets"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # Accelerate keeps one global state per process; each trainer here picks its own precision.
    AcceleratorState._reset_state()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # CI shares 2 cores; one thread per run avoids oversubscription
    yield
    torch.set_num_threads(threads)
    AcceleratorState._reset_state()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpora")
    build_corpus(folder)
    return folder


# -- config -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["default", "full"])
def test_packaged_configs_load_and_round_trip(name, tmp_path):
    config = MetaTrainerConfig.from_yaml(name)
    assert config.algorithm in ("maml", "fomaml")
    config.to_json(tmp_path / "config.json")
    assert MetaTrainerConfig.from_json(tmp_path / "config.json") == config


BAD_CONFIGS = [
    ({"mixed_precision": "fp8"}, "mixed_precision='fp8'", "'bf16'"),
    ({"adapt": "everything"}, "adapt='everything'", "'lora'"),
    ({"optimizer": {"schedule": "step"}}, "optimizer.schedule='step'", "'cosine'"),
    ({"meta_batch_size": 0}, "meta_batch_size=0", ">= 1"),
    ({"data": {"max_lenght": 64}}, "max_lenght", "max_length"),
    ({"learning_rate": 1e-3}, "learning_rate", "optimizer"),
]


@pytest.mark.parametrize(
    ("bad", "names", "allowed"), BAD_CONFIGS, ids=[str(next(iter(b))) for b, _, _ in BAD_CONFIGS]
)
def test_config_errors_name_key_and_allowed_values(bad, names, allowed):
    with pytest.raises(ValueError) as err:
        MetaTrainerConfig.from_dict(bad)
    assert names in str(err.value) and allowed in str(err.value)


def test_yaml_overrides_and_safe_loading(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("algorithm: fomaml\nmax_steps: 7\noptimizer: {lr: 0.01, schedule: linear}\n")
    config = MetaTrainerConfig.from_yaml(path, seed=5)
    assert (config.algorithm, config.max_steps, config.seed) == ("fomaml", 7, 5)
    assert config.optimizer == OptimizerConfig(lr=0.01, schedule="linear")
    path.write_text("!!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(Exception, match="python/object"):
        MetaTrainerConfig.from_yaml(path)


# -- schedule, checkpoint pieces ------------------------------------------------------------------
def test_lr_schedule_warmup_then_decay_to_zero():
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = build_scheduler(
        opt, OptimizerConfig(lr=1.0, schedule="cosine", warmup_steps=2), max_steps=6
    )
    lrs = []
    for _ in range(6):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    # transformers' warm-up starts at 0; cosine decay reaches 0 at max_steps.
    assert lrs[:3] == pytest.approx([0.0, 0.5, 1.0])
    assert lrs[3] == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert sched.get_last_lr()[0] == pytest.approx(0.0)
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    constant = build_scheduler(
        opt, OptimizerConfig(lr=1.0, schedule="constant", warmup_steps=2), max_steps=6
    )
    for _ in range(4):
        opt.step()
        constant.step()
    assert constant.get_last_lr()[0] == 1.0  # warm-up then constant (not transformers' "constant")


def test_state_round_trip_without_pickle(tmp_path):
    param = torch.nn.Parameter(torch.randn(3, 2))
    opt = torch.optim.AdamW([param], lr=0.1, betas=(0.8, 0.9))
    param.grad = torch.randn(3, 2)
    opt.step()
    state = {"optimizer": opt.state_dict(), "rng": ckpt.rng_state(), "sampler": {"next_index": 7}}
    ckpt.save_state(tmp_path, "s", state)
    assert b"pickle" not in (tmp_path / "s.json").read_bytes()
    back = ckpt.load_state(tmp_path, "s")
    fresh = torch.optim.AdamW([torch.nn.Parameter(param.detach().clone())], lr=0.1)
    fresh.load_state_dict(back["optimizer"])
    assert fresh.state_dict()["param_groups"] == opt.state_dict()["param_groups"]
    assert torch.equal(
        fresh.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"]
    )
    expected = (torch.rand(3), __import__("random").random(), __import__("numpy").random.rand())
    ckpt.set_rng_state(back["rng"])
    again = (torch.rand(3), __import__("random").random(), __import__("numpy").random.rand())
    assert torch.equal(expected[0], again[0]) and expected[1:] == again[1:]


_KILLED_WRITER = """
import sys, time
from pathlib import Path
from metanlp.training.state_io import save_state
from metanlp.files import write_folder
import torch
def slow(folder):
    save_state(folder, "meta_parameters", {"w": torch.ones(4)})
    Path(sys.argv[2]).write_text("written")
    time.sleep(60)
write_folder(Path(sys.argv[1]) / "checkpoint-2", slow)
"""


def test_kill_mid_write_keeps_latest_checkpoint_intact(tmp_path):
    out = tmp_path / "run"
    write_folder(
        out / "checkpoint-1", lambda f: ckpt.save_state(f, "meta_parameters", {"w": torch.zeros(4)})
    )
    flag = tmp_path / "flag"
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(out), str(flag)])
    deadline = time.time() + 60
    while not flag.exists() and time.time() < deadline:
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    assert flag.exists(), "the writer never reached the middle of its write"
    assert [p.name for p in ckpt.list_checkpoints(out)] == ["checkpoint-1"]
    assert any(".tmp-" in p.name for p in out.iterdir())
    assert torch.equal(
        ckpt.load_state(ckpt.latest_checkpoint(out), "meta_parameters")["w"], torch.zeros(4)
    )
    # Rewriting a step that exists swaps in the new copy; leftovers are cleaned by pruning.
    write_folder(
        out / "checkpoint-1", lambda f: ckpt.save_state(f, "meta_parameters", {"w": torch.ones(4)})
    )
    ckpt.prune_checkpoints(out, keep=1)
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-1"]
    assert torch.equal(
        load_file(str(out / "checkpoint-1" / "meta_parameters.safetensors"))["w"], torch.ones(4)
    )


# -- training runs --------------------------------------------------------------------------------
def test_resume_equals_uninterrupted_run_and_logs(data_dir, tmp_path):
    full = tmp_path / "full"
    config = tiny_config(
        data_dir, full, save_every=2, save_total_limit=3, report_to=["tensorboard"]
    )
    trainer = MetaTrainer(config)
    state = trainer.train()
    assert state.step == 4 and [p.name for p in ckpt.list_checkpoints(full)] == [
        "checkpoint-2",
        "checkpoint-4",
    ]
    records = read_jsonl(full / "metrics.jsonl")
    assert [r["step"] for r in records if r["split"] == "train"] == [1, 2, 3, 4]
    assert [r["step"] for r in records if r["split"] == "val"] == [2, 4]
    assert all(math.isfinite(r["query_loss"]) for r in records if r["split"] == "train")
    assert (full / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    events = list(full.rglob("events.out.tfevents.*"))
    assert events, "no TensorBoard event file"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = EventAccumulator(str(events[0].parent)).Reload().Tags()["scalars"]
    assert {"train/query_loss", "val/accuracy"} <= set(tags)

    # Interrupted after step 2: the run folder as it was when checkpoint-2 was the newest.
    resumed_dir = tmp_path / "resumed"
    shutil.copytree(full, resumed_dir)
    shutil.rmtree(resumed_dir / "checkpoint-4")
    AcceleratorState = __import__(
        "accelerate.state", fromlist=["AcceleratorState"]
    ).AcceleratorState
    AcceleratorState._reset_state()
    resumed = MetaTrainer(tiny_config(data_dir, resumed_dir, save_every=2, save_total_limit=3))
    resumed.train(resume_from_checkpoint=True)
    for name, value in meta_parameters(trainer).items():
        assert torch.equal(value, meta_parameters(resumed)[name]), name
    a = load_file(str(full / "checkpoint-4" / "meta_parameters.safetensors"))
    b = load_file(str(resumed_dir / "checkpoint-4" / "meta_parameters.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert read_jsonl(resumed_dir / "metrics.jsonl") == records
    saved = json.loads((full / "checkpoint-4" / "config.json").read_text())
    assert MetaTrainerConfig.from_dict(saved).max_steps == 4


def test_accumulation_equals_bigger_meta_batch(data_dir, tmp_path):
    runs = {}
    for batch, accum in ((2, 2), (4, 1)):
        from accelerate.state import AcceleratorState

        AcceleratorState._reset_state()
        config = tiny_config(
            data_dir,
            tmp_path / f"b{batch}",
            meta_batch_size=batch,
            gradient_accumulation_steps=accum,
            max_steps=2,
            keep_best=False,
        )
        config.data.val = None
        trainer = MetaTrainer(config)
        trainer.train()
        runs[batch] = meta_parameters(trainer)
    for name, value in runs[2].items():
        torch.testing.assert_close(value, runs[4][name], rtol=1e-6, atol=1e-7)


def test_vmap_task_batching_equals_the_task_loop(data_dir, tmp_path):
    """`task_batching: vmap` runs a meta-batch in one pass; the update must equal the loop's."""
    runs = {}
    for batching in ("loop", "vmap"):
        from accelerate.state import AcceleratorState

        AcceleratorState._reset_state()
        config = tiny_config(
            data_dir,
            tmp_path / batching,
            meta_batch_size=2,
            max_steps=1,
            keep_best=False,
            adapt_options={"lora_dropout": 0.0},  # vmap draws dropout masks differently
            algorithm_config={"task_batching": batching, "train_dropout": False},
        )
        config.data.val = None
        trainer = MetaTrainer(config)
        trainer.train()
        # The meta-gradient of the step (AdamW's first step is ~lr * sign(g), which would turn
        # float noise on near-zero gradient entries into lr-sized differences).
        runs[batching] = {n: p.grad.clone() for n, p in trainer.meta_params.items()}
    loop = torch.cat([g.flatten() for g in runs["loop"].values()])
    vmap = torch.cat([g.flatten() for g in runs["vmap"].values()])
    assert loop.norm() > 0
    assert (vmap - loop).norm() / loop.norm() < 1e-4


def _one_step(data_dir, out, precision, hook_dtypes=None):
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()
    config = tiny_config(data_dir, out, mixed_precision=precision, max_steps=1, keep_best=False)
    config.data.val = None
    trainer = MetaTrainer(config)
    if hook_dtypes is not None:
        layer = trainer.algorithm.model.base_encoder.encoder.layer[0].intermediate.dense
        layer.register_forward_hook(lambda m, i, o: hook_dtypes.append(o.dtype))
    return trainer, trainer.meta_step()


def test_bf16_autocast_on_cpu_close_to_fp32(data_dir, tmp_path):
    _, ref_metrics = (ref := _one_step(data_dir, tmp_path / "fp32", "no"))
    seen: list[torch.dtype] = []
    trainer, metrics = _one_step(data_dir, tmp_path / "bf16", "bf16", seen)
    assert torch.bfloat16 in seen
    assert metrics["query_loss"] == pytest.approx(ref_metrics["query_loss"], abs=2e-2)
    for name, value in meta_parameters(trainer).items():
        assert torch.isfinite(value).all()
        torch.testing.assert_close(value, meta_parameters(ref[0])[name], rtol=0, atol=5e-3)


def test_fp16_loss_scaling_matches_fp32_and_skips_overflow(data_dir, tmp_path):
    ref, ref_metrics = _one_step(data_dir, tmp_path / "fp32", "no")
    seen: list[torch.dtype] = []
    trainer, metrics = _one_step(data_dir, tmp_path / "fp16", "fp16", seen)
    assert torch.float16 in seen and metrics["loss_scale"] == 2.0**16
    assert metrics["grad_norm"] == pytest.approx(ref_metrics["grad_norm"], rel=1e-2)
    # The unscaled meta-gradients (left in .grad) agree with fp32 to fp16 accuracy.
    grads = {n: p.grad for n, p in trainer.meta_params.items()}
    for name, p in ref.meta_params.items():
        assert torch.isfinite(grads[name]).all()
        assert (grads[name] - p.grad).norm() <= 1e-2 * p.grad.norm() + 1e-6, name
    # A scale far too large overflows fp16: the step is skipped, the scale halves, nothing is NaN.
    before = meta_parameters(trainer)
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**40)
    metrics = trainer.meta_step()
    assert metrics["loss_scale"] == 2.0**40 and trainer.scaler.get_scale() == 2.0**39
    for name, value in meta_parameters(trainer).items():
        assert torch.equal(value, before[name]), name


def test_early_stopping_keeps_best(data_dir, tmp_path):
    # A vanishing learning rate leaves validation accuracy flat: no evaluation beats the first.
    config = tiny_config(
        data_dir,
        tmp_path / "es",
        max_steps=8,
        eval_every=1,
        early_stopping_patience=2,
        optimizer={"lr": 1e-12, "warmup_steps": 0},
    )
    trainer = MetaTrainer(config)
    state = trainer.train()
    assert (state.step, state.best_step, state.stopped_early) == (3, 1, True)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "es")] == ["checkpoint-3"]
    best = ckpt.load_state(tmp_path / "es" / "best", "meta_parameters")
    for name, value in meta_parameters(trainer).items():
        assert torch.equal(value, best[name]), name


def test_progress_bar_shows_validation_scores(data_dir, tmp_path, capfd):
    config = tiny_config(data_dir, tmp_path / "bar", max_steps=2, eval_every=1, progress_bar=True)
    state = MetaTrainer(config).train()
    bar = capfd.readouterr().err.split("\r")[-1]  # the meta-train bar's last refresh
    best = f"best_accuracy={100 * state.best_metric:.1f} %"
    assert "meta-train" in bar and "val_accuracy=" in bar and best in bar, bar


def test_learning_curve_draws_the_logged_keys(tmp_path):
    records = [
        {"step": 1, "split": "train", "query_loss": 1.1},
        {"step": 2, "split": "train", "query_loss": 0.9},
        {"step": 2, "split": "val", "accuracy": 0.5},
    ]
    png = plot_learning_curve(records, tmp_path / "curve.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match=r"No train record has 'loss'.*query_loss"):
        plot_learning_curve(records, tmp_path / "bad.png", train_key="loss")


# -- issue 28: the metric's direction, a used output_dir, best/ after a resume --------------------
def test_greater_is_better_is_inferred_for_losses():
    assert MetaTrainerConfig(metric_for_best="loss").greater_is_better is False
    assert MetaTrainerConfig(metric_for_best="accuracy").greater_is_better is True
    assert MetaTrainerConfig(metric_for_best="loss", greater_is_better=True).greater_is_better


def test_keep_best_and_early_stopping_follow_the_metric_direction(data_dir, tmp_path):
    """metric_for_best: loss keeps the evaluation with the lowest loss (not the highest), and
    early stopping counts evaluations whose loss did not go down."""
    config = tiny_config(data_dir, tmp_path / "loss", max_steps=4, eval_every=1,
                         metric_for_best="loss", early_stopping_patience=4)  # fmt: skip
    trainer = MetaTrainer(config)
    state = trainer.train()
    losses = [(r["loss"], r["step"]) for r in state.history if r["split"] == "val"]
    assert len(losses) == 4 and len({loss for loss, _ in losses}) > 1, losses
    best_loss, best_step = min(losses)
    assert (state.best_metric, state.best_step) == (best_loss, best_step)
    lowest, patience = math.inf, 0
    for loss, _ in losses:  # evaluations since the loss last went down
        lowest, patience = (loss, 0) if loss < lowest else (lowest, patience + 1)
    assert state.evals_without_improvement == patience
    best = ckpt.load_state(tmp_path / "loss" / "best", "meta_parameters")
    for name, value in meta_parameters(trainer).items():
        assert torch.equal(value, best[name]), name


def test_a_used_output_dir_is_refused_unless_resumed_or_overwritten(data_dir, tmp_path):
    """A new run in an output_dir holding an earlier run would keep the old checkpoints (a later
    --resume would resume the *old* run) and cut its log: refused, or with
    overwrite_output_dir exactly the earlier run's outputs are deleted."""
    from accelerate.state import AcceleratorState

    out = tmp_path / "run"
    MetaTrainer(tiny_config(data_dir, out, max_steps=2, save_every=1)).train()
    (out / "notes.txt").write_text("mine")
    before = sorted(p.name for p in out.iterdir())
    AcceleratorState._reset_state()
    with pytest.raises(FileExistsError, match=r"holds an earlier run.*overwrite_output_dir"):
        MetaTrainer(tiny_config(data_dir, out, max_steps=1)).train()
    assert sorted(p.name for p in out.iterdir()) == before
    AcceleratorState._reset_state()
    MetaTrainer(tiny_config(data_dir, out, max_steps=1, overwrite_output_dir=True)).train()
    assert [p.name for p in ckpt.list_checkpoints(out)] == ["checkpoint-1"]
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl") if r["split"] == "train"] == [1]
    assert (out / "notes.txt").read_text() == "mine"


def test_resume_puts_best_back_as_of_the_checkpoint(data_dir, tmp_path):
    """A run killed after writing best/ at step 4 and before checkpoint-4: the resumed run's
    best/ (and the weights it ends with) are those of the best step its state reports, whether
    that is the checkpoint's own step or an earlier one."""
    from accelerate.state import AcceleratorState

    full = tmp_path / "full"
    config = dict(save_every=1, save_total_limit=None, metric_for_best="loss")
    trainer = MetaTrainer(tiny_config(data_dir, full, **config))
    trainer.train()
    for resume_at, best_at in ((3, 2), (2, 2)):
        run = tmp_path / f"killed{resume_at}"
        shutil.copytree(full, run)
        for later in range(resume_at + 1, 5):
            shutil.rmtree(run / f"checkpoint-{later}")
        shutil.rmtree(run / "best")  # the killed run wrote step 4's weights to best/
        shutil.copytree(full / "checkpoint-4", run / "best")
        AcceleratorState._reset_state()
        resumed = MetaTrainer(tiny_config(data_dir, run, **config, max_steps=resume_at))
        state = resumed.train(resume_from_checkpoint=True)
        assert state.best_step == best_at
        expected = load_file(str(full / f"checkpoint-{best_at}" / "meta_parameters.safetensors"))
        for name, value in meta_parameters(resumed).items():
            assert torch.equal(value, expected[name]), (resume_at, name)
        kept = load_file(str(run / "best" / "meta_parameters.safetensors"))
        assert all(torch.equal(kept[k], expected[k]) for k in expected)


@pytest.mark.parametrize(
    "algorithm, config",
    [("protonet", {}), ("fomaml", {"inner_steps": 2, "inner_lr": 0.1})],
    ids=["protonet", "fomaml"],
)
def test_bf16_meta_gradient_matches_fp32(algorithm, config):
    """The meta-gradient under bf16 autocast points where the fp32 one does: cosine similarity
    >= 0.995 and a difference within 5 % of the fp32 norm (tiny random BERT, every weight
    adapted; measured here: cosine 0.9999 / 0.9998, difference 1.3 % / 2.6 %). The gradients stay
    fp32 (autocast casts copies of the fp32 master weights)."""
    from test_meta_core import tiny_episode, tiny_model

    from metanlp.meta import build_algorithm

    def meta_gradient(bf16: bool) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        algo = build_algorithm(
            algorithm, tiny_model(), {"params": "all", "train_dropout": False, **config}
        )
        seen: list[torch.dtype] = []
        layer = algo.model.base_encoder.encoder.layer[0].intermediate.dense
        layer.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            algo.meta_backward(tiny_episode())
        assert set(seen) == {torch.bfloat16 if bf16 else torch.float32}
        return {n: p.grad for n, p in algo.named_meta_parameters() if p.grad is not None}

    ref, got = meta_gradient(False), meta_gradient(True)
    assert sorted(got) == sorted(ref) and len(ref) > 10
    assert all(g.dtype == torch.float32 for g in got.values())
    a = torch.cat([ref[n].flatten() for n in ref])
    b = torch.cat([got[n].flatten() for n in ref])
    assert a.norm() > 0
    assert torch.nn.functional.cosine_similarity(a, b, dim=0) >= 0.995
    assert (b - a).norm() / a.norm() <= 0.05


def test_precision_probe_picks_bf16_only_when_measured_faster():
    from metanlp.training.precision import probe_precision

    measured = probe_precision("cpu", rounds=1)
    assert measured.fp32_flops > 0 and measured.bf16_flops > 0
    assert measured.mixed_precision == ("bf16" if measured.speedup >= 1.3 else "no")
    # The rule, at thresholds no probe can miss: bf16 is chosen only when it is fast enough.
    assert probe_precision("cpu", rounds=1, min_speedup=0.0).mixed_precision == "bf16"
    assert probe_precision("cpu", rounds=1, min_speedup=math.inf).mixed_precision == "no"


def test_mixed_precision_auto_probes_uses_and_prints_its_choice(data_dir, tmp_path, capsys):
    seen: list[torch.dtype] = []
    trainer, metrics = _one_step(data_dir, tmp_path / "auto", "auto", seen)
    chosen = trainer.mixed_precision
    assert chosen in ("no", "bf16") and trainer.accelerator.mixed_precision == chosen
    assert set(seen) == {torch.bfloat16 if chosen == "bf16" else torch.float32}
    assert math.isfinite(metrics["query_loss"])
    assert all(p.dtype == torch.float32 for p in trainer.meta_params.values())
    printed = capsys.readouterr().out
    path = "bf16 autocast" if chosen == "bf16" else "fp32"
    assert f"precision: {path} (mixed_precision=auto" in printed and "GFLOP/s" in printed


def test_fused_adamw_matches_the_per_tensor_loop():
    """`build_optimizer` steps CPU parameters with torch's fused AdamW (a tenth of the time on
    MiniLM); 20 steps of it give the per-tensor AdamW's weights up to float rounding."""
    config = OptimizerConfig(lr=1e-2, weight_decay=0.01)
    generator = torch.Generator().manual_seed(0)
    start = [torch.randn(shape, generator=generator) for shape in ((64, 32), (32,), (7, 3, 5))]
    fused = [torch.nn.Parameter(t.clone()) for t in start]
    plain = [torch.nn.Parameter(t.clone()) for t in start]
    opt = build_optimizer(fused, config)
    assert opt.defaults["fused"] is True
    ref = torch.optim.AdamW(plain, lr=1e-2, betas=tuple(config.betas), eps=config.eps,
                            weight_decay=0.01, foreach=False)  # fmt: skip
    for _ in range(20):
        grads = [torch.randn(t.shape, generator=generator) for t in start]
        for params, optimizer in ((fused, opt), (plain, ref)):
            for p, g in zip(params, grads, strict=True):
                p.grad = g.clone()
            optimizer.step()
    for a, b, s in zip(fused, plain, start, strict=True):
        assert (a - s).abs().max() > 0.05  # they moved
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
