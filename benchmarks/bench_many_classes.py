"""Adaptation time at many classes (issue 27 item 2): `from_pretrained().adapt` against SetFit.

At 77-way 10-shot (770 support texts, BANKING77's shape) the default learner's adaptation
policy must cost at most a tenth of SetFit's training. The support set is the first draw of the
held-out setting "BANKING77 77-way 10-shot" (`metanlp.general.HELD_OUT_SETTINGS`: 10 train texts
of each of the 77 intents, lengths from 3 to 80 tokens); ``--corpus tweets`` gives the earlier
workload, real tweets relabelled in 77 blocks of 10. Only time is measured here (the accuracy is
`bench_general.py`'s).

- metanlp: `MetaLearner.from_pretrained().adapt(texts, labels)` (the default policy), and with
  ``--learner`` a saved learner's (the general learner's) too, each timed whole, once; the
  decision is recorded.
- SetFit (same MiniLM body, its defaults: 20 pair iterations, batch 16, so ``2 * 20 * 770 /
  16 = 1925`` contrastive steps, then its logistic-regression head): a full run on 2 CPU cores
  would take hours, so it is trained for ``--setfit-steps`` short and long prefixes (its
  ``max_steps``, head fit included); the per-step time is their difference over the steps, the
  fixed part (encoding, head) the rest, and the full run's time is that line at 1925 steps.

Run in the benchmark venv (SetFit is not a metanlp dependency)::

    .venv-bench/bin/python benchmarks/bench_many_classes.py --out benchmarks/results

``--no-setfit`` times metanlp alone (any venv).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (  # noqa: E402
    markdown_table,
    provenance,
    provenance_markdown,
    write_json,
    write_markdown,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=None, help="METANLP_DATA_DIR (default: ./data)")
    p.add_argument("--n-way", type=int, default=77)
    p.add_argument("--k-shot", type=int, default=10)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--corpus", default="banking77", choices=["banking77", "tweets"])
    p.add_argument("--learner", default=None, help="also time this saved learner's adapt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--setfit-steps", type=int, nargs=2, default=(8, 24), metavar=("SHORT", "LONG"))
    p.add_argument("--no-setfit", action="store_true")
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--stem", default="many_classes")
    args = p.parse_args(argv)
    short, long = args.setfit_steps
    if not 1 <= short < long:
        p.error(f"--setfit-steps {short} {long}: give 1 <= SHORT < LONG.")
    return args


def support_set(
    data: str | None, n_way: int, k_shot: int, seed: int, corpus: str = "banking77"
) -> tuple[list, list]:
    """``n_way * k_shot`` support texts and their labels.

    ``banking77``: the first draw of the held-out setting (``k_shot`` train texts of each of the
    first ``n_way`` intents it draws, labelled with the intents' names); ``tweets``: distinct real
    tweets labelled ``intent_0`` ... in blocks of ``k_shot``.
    """
    import numpy as np

    from metanlp.corpora import load_corpus

    if corpus == "banking77":
        from metanlp.general import HELD_OUT_SETTINGS, held_out_sampler

        setting = next(
            s for s in HELD_OUT_SETTINGS if s.corpus == "banking77" and s.shots == k_shot
        )
        from metanlp.models import load_encoder

        tokenizer = load_encoder().tokenizer
        episode = held_out_sampler(setting, data, seed=seed, tokenizer=tokenizer).episode(0)
        names = list(episode.label_names)
        rows = [
            (t, y)
            for t, y in zip(episode.support_inputs, episode.support_targets, strict=True)
            if y < n_way
        ]
        return [t for t, _ in rows], [names[int(y)] for _, y in rows]
    tweets = load_corpus("tweets", data)
    rows = np.random.default_rng(seed).permutation(len(tweets))
    texts: list[str] = []
    seen: set[str] = set()
    for i in rows.tolist():
        text = tweets[i]["text"]
        if text not in seen:
            seen.add(text)
            texts.append(text)
        if len(texts) == n_way * k_shot:
            break
    labels = [f"intent_{j // k_shot}" for j in range(len(texts))]
    return texts, labels


def time_metanlp(
    texts: list[str], labels: list[str], max_length: int, learner_path: str | None = None
) -> dict[str, Any]:
    from metanlp.api import MetaLearner

    # A saved learner keeps its own max_length (its config); the plain encoder takes ours.
    options = {} if learner_path else {"max_length": max_length}
    learner = MetaLearner.from_pretrained(learner_path, device="cpu", **options)
    began = time.perf_counter()
    clf = learner.adapt(texts, labels)
    seconds = time.perf_counter() - began
    return {
        "seconds": seconds,
        "decision": clf.decision.to_dict(),
        "summary": clf.decision.summary(),
    }


def time_setfit(texts: list[str], labels: list[str], max_length: int, steps: int) -> float:
    """Seconds of SetFit's training (contrastive ``steps`` + its head) on the support set."""
    from datasets import Dataset
    from setfit import SetFitModel, Trainer

    from benchmarks.peers.setfit_runner import SetFitMethod

    method = SetFitMethod(max_length=max_length)
    model = SetFitModel.from_pretrained(str(method.model_path))
    model.model_body.max_seq_length = max_length
    names = sorted(set(labels))
    train = Dataset.from_dict({"text": texts, "label": [names.index(y) for y in labels]})
    with tempfile.TemporaryDirectory(prefix="setfit-") as tmp:
        arguments = method._arguments(tmp)
        arguments.max_steps = steps
        trainer = Trainer(model=model, args=arguments, train_dataset=train)
        began = time.perf_counter()
        trainer.train()
        return time.perf_counter() - began


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    texts, labels = support_set(args.data, args.n_way, args.k_shot, args.seed, args.corpus)
    setting = (
        f"{args.n_way}-way {args.k_shot}-shot ({len(texts)} texts, max_length {args.max_length})"
    )
    print(f"[many-classes] {setting}", flush=True)
    ours = time_metanlp(texts, labels, args.max_length)
    print(f"[many-classes] metanlp adapt: {ours['seconds']:.1f} s, {ours['summary']}", flush=True)
    result: dict[str, Any] = {
        "provenance": provenance(argv),
        "setting": setting,
        "metanlp": ours,
    }
    rows = [
        ["metanlp `from_pretrained().adapt` (policy)", ours["seconds"], "measured", ours["summary"]]
    ]
    if args.learner:
        general = time_metanlp(texts, labels, args.max_length, args.learner)
        print(f"[many-classes] {args.learner}: {general['seconds']:.1f} s", flush=True)
        result["learner"] = {"path": args.learner, **general}
        rows.append([f"`{args.learner}` adapt (policy)", general["seconds"], "measured",
                     general["summary"]])  # fmt: skip
    if not args.no_setfit:
        short, long = args.setfit_steps
        t_short = time_setfit(texts, labels, args.max_length, short)
        t_long = time_setfit(texts, labels, args.max_length, long)
        per_step = (t_long - t_short) / (long - short)
        fixed = max(t_short - short * per_step, 0.0)
        full_steps = math.ceil(2 * 20 * len(texts) / 16)
        estimate = fixed + full_steps * per_step
        result["setfit"] = {
            "steps": {str(short): t_short, str(long): t_long},
            "seconds_per_step": per_step,
            "fixed_seconds": fixed,
            "default_steps": full_steps,
            "estimated_seconds": estimate,
        }
        result["ratio_setfit_over_metanlp"] = estimate / ours["seconds"]
        if args.learner:
            result["ratio_setfit_over_learner"] = estimate / result["learner"]["seconds"]
        print(
            f"[many-classes] SetFit: {t_short:.1f} s at {short} steps, {t_long:.1f} s at {long}: "
            f"{per_step:.2f} s/step, about {estimate:.0f} s for its {full_steps} steps "
            f"({estimate / ours['seconds']:.1f}x metanlp)",
            flush=True,
        )
        rows += [
            [f"SetFit, {short} contrastive steps + head", t_short, "measured", ""],
            [f"SetFit, {long} contrastive steps + head", t_long, "measured", ""],
            [f"SetFit, its default {full_steps} steps + head", estimate, "extrapolated", ""],
        ]
    out = Path(args.out)
    write_json(out / f"{args.stem}.json", result)
    table = markdown_table(["method", "seconds", "how", "decision"], rows)
    ratio = result.get("ratio_setfit_over_metanlp")
    verdict = (
        ""
        if ratio is None
        else f"\n\nSetFit's time / metanlp's: **{ratio:.1f}** (target: at least 10)."
    )
    if "ratio_setfit_over_learner" in result:
        verdict += (
            f" SetFit's / the saved learner's: **{result['ratio_setfit_over_learner']:.1f}**."
        )
    write_markdown(
        out / f"{args.stem}.md",
        f"Adaptation time at {setting}",
        [provenance_markdown(result["provenance"]), __doc__.split("\n\n", 1)[1], table + verdict],
    )
    print(f"[many-classes] wrote {out / args.stem}.json and .md", flush=True)


if __name__ == "__main__":
    main()
