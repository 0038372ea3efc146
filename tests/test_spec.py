"""One learner spec for the trainer and the saved learner, the trainer's contract with an
algorithm, and the CLI overrides generated from the config's docstrings."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import metanlp.meta  # noqa: F401  (registers the algorithms)
from metanlp.cli import _config_override_fields, _parser
from metanlp.meta.registry import algorithm_from_spec, algorithm_options, list_algorithms
from metanlp.models import build_model
from metanlp.serialization import LearnerConfig
from metanlp.spec import ADAPT_OPTION_DEFAULTS, PARAMETER_SETS, LearnerSpec
from metanlp.training.config import (
    DataConfig,
    MetaTrainerConfig,
    OptimizerConfig,
    apply_overrides,
    field_help,
)
from metanlp.training.contract import TrainableAlgorithm, check_trainable

SPEC_FIELDS = [f.name for f in dataclasses.fields(LearnerSpec)]


def test_trainer_and_learner_configs_share_the_spec():
    for cls in (MetaTrainerConfig, LearnerConfig):
        assert issubclass(cls, LearnerSpec)
        names = [f.name for f in dataclasses.fields(cls)]
        assert set(SPEC_FIELDS) <= set(names)
    trainer = MetaTrainerConfig(adapt="top", algorithm="protomaml", adapt_options={"top_layers": 1})
    learner = LearnerConfig(base_model="x/y", **trainer.spec_fields())
    assert learner.spec_fields() == trainer.spec_fields()
    assert algorithm_options(learner) == algorithm_options(trainer)


@pytest.mark.parametrize("adapt", PARAMETER_SETS)
def test_every_adapt_choice_is_accepted_by_both_configs(adapt):
    MetaTrainerConfig(adapt=adapt)
    LearnerConfig(base_model="x/y", adapt=adapt)


def test_protonet_head_rule_lives_in_its_config():
    # ProtoNet has no head: adapting "the head" means training the encoder, for both configs.
    for config in (
        MetaTrainerConfig(algorithm="protonet", adapt="head"),
        LearnerConfig(base_model="x/y", algorithm="protonet", adapt="head"),
    ):
        assert algorithm_options(config) == {"params": "all"}
    assert algorithm_options(MetaTrainerConfig(algorithm="maml", adapt="head")) == {
        "params": "head"
    }
    # An explicit params in algorithm_config wins over the mapping.
    explicit = MetaTrainerConfig(
        algorithm="protonet", adapt="head", algorithm_config={"params": "top"}
    )
    assert algorithm_options(explicit)["params"] == "top"
    assert algorithm_options(explicit)["top_layers"] == ADAPT_OPTION_DEFAULTS["top_layers"]


@pytest.mark.parametrize(
    "kwargs,expected",
    [
        ({"adapt": "bitfit"}, ["adapt='bitfit'", "adapter", "lora"]),
        ({"adapt_options": {"lora_rank": 4}}, ["lora_rank", "lora_r"]),
        ({"adapt_options": {"max_ways": 4}}, ["max_ways", "top-level"]),
        ({"max_ways": 1}, ["max_ways=1", ">= 2"]),
        ({"algorithm": "mamal"}, ["mamal", "maml"]),
        ({"task": "ner"}, ["task='ner'", "token"]),
        ({"adapt_options": [1]}, ["adapt_options", "mapping"]),
    ],
)
def test_bad_spec_is_refused_by_both_configs_with_the_fix(kwargs, expected):
    for build in (MetaTrainerConfig, lambda **kw: LearnerConfig(base_model="x/y", **kw)):
        with pytest.raises(ValueError) as info:
            build(**kwargs)
        for text in expected:
            assert text in str(info.value)


def test_lora_and_adapter_models_from_the_spec():
    lora = build_model(MetaTrainerConfig(adapt="lora", adapt_options={"lora_r": 2}))
    assert lora.peft_type == "LORA"
    shapes = {n: p.shape for n, p in lora.named_parameters() if "lora_A" in n}
    assert shapes and all(s[0] == 2 for s in shapes.values())
    spec = MetaTrainerConfig(adapt="adapter", algorithm="fomaml", max_ways=4)
    ia3 = build_model(spec)
    assert ia3.peft_type == "IA3" and ia3.head.out_features == 4
    algo = algorithm_from_spec(spec, ia3)
    assert set(algo.inner_names) == set(ia3.peft_parameter_names) | {"head.weight", "head.bias"}


@pytest.mark.parametrize("name", list_algorithms())
def test_every_algorithm_meets_the_trainer_contract(name):
    spec = MetaTrainerConfig(
        algorithm=name,
        adapt="top",
        task="token" if name == "decomposed" else "sequence",
        algorithm_config={"inner_steps": 0} if name == "protonet" else {},
    )
    algorithm = algorithm_from_spec(spec, build_model(spec))
    assert isinstance(algorithm, TrainableAlgorithm)
    assert check_trainable(algorithm) is algorithm


def test_a_non_algorithm_is_refused_with_what_it_lacks():
    class Half:
        model = None

        def meta_backward(self, episode, scale=1.0, *, grad_scale=None):
            return {}

    with pytest.raises(TypeError, match="named_meta_parameters.*MetaAlgorithm"):
        check_trainable(Half())


def test_grad_scale_is_an_argument_and_leaves_the_config_alone():
    """The fp16 loss scale reaches the inner loop as an argument: scaling by a power of two is
    exact in float32, so the meta-gradient is unchanged, and the algorithm's config is not
    written (the trainer used to set ``config.grad_scale``)."""
    from test_meta_core import tiny_episode, tiny_model

    def grads(grad_scale):
        torch.manual_seed(0)
        model = tiny_model()
        algo = metanlp.meta.build_algorithm(
            "maml",
            model,
            {"params": "top", "top_layers": 1, "inner_lr": 0.1, "train_dropout": False},
        )
        algo.meta_backward(tiny_episode(), grad_scale=grad_scale)
        assert algo.config.grad_scale is None
        return [p.grad.clone() for p in algo.meta_parameters()]

    for plain, scaled in zip(grads(None), grads(1024.0), strict=True):
        torch.testing.assert_close(plain, scaled, rtol=0, atol=0)


def test_misspelt_algorithm_and_option_get_the_closest_name():
    from metanlp.meta.registry import build_config

    with pytest.raises(
        ValueError, match=r"algorithm='mamll' is not registered \(did you mean 'maml'\?\)"
    ):
        MetaTrainerConfig(algorithm="mamll")
    with pytest.raises(ValueError, match=r"algorithm='protonett' .*did you mean 'protonet'"):
        LearnerConfig(base_model="x/y", algorithm="protonett")
    with pytest.raises(
        ValueError, match=r"no options \['inner_step'\] \(did you mean 'inner_steps'\?\)"
    ):
        build_config("maml", {"inner_step": 3})


def test_every_config_field_has_help_and_a_cli_override():
    for cls in (MetaTrainerConfig, DataConfig, OptimizerConfig):
        helps = field_help(cls)
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in helps]
        assert not missing, f"{cls.__name__} docstring lacks {missing}"
    fields = _config_override_fields()
    assert "optimizer.lr" in fields and "data.max_length" in fields and "max_ways" in fields
    args = _parser().parse_args(
        ["train", "--config", "default", "--optimizer.lr", "0.5", "--max-steps", "7",
         "--algorithm-config", "{inner_steps: 2}", "--output-dir", "123"]
    )  # fmt: skip
    assert getattr(args, "optimizer.lr") == "0.5" and args.max_steps == "7"


def test_overrides_reach_nested_sections(tmp_path):
    from metanlp.cli import _parse_override

    hints = {key: field_.hint for key, field_ in _config_override_fields().items()}
    overrides = {
        "optimizer.lr": _parse_override("optimizer.lr", "0.5", hints["optimizer.lr"]),
        "max_steps": _parse_override("max_steps", "7", hints["max_steps"]),
        "output_dir": _parse_override("output_dir", "123", hints["output_dir"]),
        "data.data_dir": _parse_override("data.data_dir", "null", hints["data.data_dir"]),
        "algorithm_config": _parse_override("algorithm_config", "{inner_steps: 2}", dict),
    }
    config = MetaTrainerConfig.from_yaml("default", **overrides)
    assert config.optimizer.lr == 0.5 and config.max_steps == 7 and config.output_dir == "123"
    assert config.optimizer.schedule == MetaTrainerConfig.from_yaml("default").optimizer.schedule
    assert config.algorithm_config == {"inner_steps": 2} and config.data.data_dir is None
    with pytest.raises(ValueError, match="not a mapping"):
        apply_overrides({"optimizer": 3}, {"optimizer.lr": 1})
    with pytest.raises(ValueError, match="must be a number > 0"):
        MetaTrainerConfig.from_yaml("default", **{"optimizer.lr": -1})


def test_metanlp_trainer_stays_importable():
    import metanlp.trainer as old
    import metanlp.training as new

    assert old.MetaTrainer is new.MetaTrainer and old.MetaTrainerConfig is new.MetaTrainerConfig
