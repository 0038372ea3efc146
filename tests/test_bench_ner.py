"""The NER benchmark's validation is honest and its scripts run end to end at smoke size.

- Validation types come from the training side only (no test type is seen), and the
  validation learner never meta-trains on the validation types.
- ``bench_ner.py --quick`` scores the method chosen on validation and pairs it; the validation
  script scores its variants with the typing of gold spans.
"""

from __future__ import annotations

import argparse
import json

from benchmarks import bench_ner, ner_validation
from benchmarks.accuracy_setup import NER_TEST_TYPES, NER_TRAIN_TYPES


def test_validation_uses_training_types_only():
    val_train, val = set(ner_validation.VAL_TRAIN_TYPES), set(ner_validation.VAL_TYPES)
    assert val_train | val <= set(NER_TRAIN_TYPES)
    assert not val_train & val and not (val_train | val) & set(NER_TEST_TYPES)
    # every setting tried on validation is a valid decomposed config
    from metanlp.meta.decomposed import DecomposedConfig

    for options in {**bench_ner.TYPER_VARIANTS, **bench_ner.CHOSEN}.values():
        DecomposedConfig(**{**bench_ner.DECOMPOSED, **options})


def test_benchmark_and_validation_smoke(tmp_path, data_dir):
    (name,) = bench_ner.CHOSEN
    common = ["--quick", "--cache", str(tmp_path / "cache"), "--data", str(data_dir)]
    bench_ner.main([*common, "--only-decomposed", "--only-variants", name, "--shots", "1",
                    "--out", str(tmp_path / "test")])  # fmt: skip
    record = json.loads((tmp_path / "test" / "ner_quick.json").read_text())
    (result,) = record["settings"]["wnut_ner_3w1s"]
    assert result["method"] == name == record["lead"] and len(result["episodes"]) == 2
    assert {"f1", "detection_f1", "gold_span_typing"} <= set(result["episodes"][0])
    ner_validation.main([*common, "--variants", "decomposed", "--out", str(tmp_path / "val")])
    record = json.loads((tmp_path / "val" / "ner_validation_quick.json").read_text())
    (result,) = record["settings"]["validation_3w1s"]
    assert result["summary"]["gold_span_typing"]["n"] == 2


def test_recipe_uses_the_settings_chosen_on_validation():
    import importlib.util

    from benchmarks.common import REPO_ROOT

    spec = importlib.util.spec_from_file_location(
        "recipe", REPO_ROOT / "recipes" / "ner_decomposed.py"
    )
    recipe = importlib.util.module_from_spec(spec)
    import sys

    sys.path.insert(0, str(REPO_ROOT / "recipes"))
    try:
        spec.loader.exec_module(recipe)
    finally:
        sys.path.remove(str(REPO_ROOT / "recipes"))
    assert recipe.algorithm_options("names") == {**recipe.ALGORITHM, **bench_ner.CHOSEN_OPTIONS}
    args = argparse.Namespace(size=recipe.SIZES["smoke"], seed=0, data="data", out="out",
                              no_progress=True, polish=False, typing="names", device="cpu")  # fmt: skip
    (train,) = recipe.config_for(args).data.train  # episodes holding every training type
    assert (
        train["n_way"]
        == len(NER_TRAIN_TYPES)
        == len(train["types"])
        == bench_ner.ALL_TYPES["n_way"]
    )
    assert recipe.algorithm_options("prototypes") == recipe.ALGORITHM


def test_the_chosen_settings_are_the_validated_variant():
    """`CHOSEN` is exactly the validation variant `CHOSEN_FROM`."""
    from metanlp.meta.decomposed import DecomposedConfig

    (options,) = bench_ner.CHOSEN.values()
    chosen = DecomposedConfig(**{**bench_ner.DECOMPOSED, **options})
    validated = DecomposedConfig(
        **{**bench_ner.DECOMPOSED, **bench_ner.TYPER_VARIANTS[bench_ner.CHOSEN_FROM]}
    )
    assert chosen == validated
