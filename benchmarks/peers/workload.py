"""The shared workload of the speed/memory comparison (issue 12), identical for every implementation.

MiniLM (real weights, eager attention, no pooler) with a linear head on mean pooling, N-way
episodes, k inner SGD steps at one rate, query cross-entropy averaged over the meta-batch.
Dropout is off (eval mode) so that every implementation computes the same function and the
meta-gradients can be compared exactly. Every implementation starts from the same initial
tensors (head and LoRA), written once by the driver and loaded by each worker process.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MODEL_INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass(frozen=True)
class Case:
    """One adapted-parameter setting: ``params`` is ``"lora"``, ``"all"`` or ``"top"``."""

    name: str
    params: str
    first_order: bool
    top_layers: int = 2

    def to_dict(self) -> dict:
        return asdict(self)


CASES: dict[str, Case] = {
    c.name: c
    for c in (
        Case("lora_so", "lora", first_order=False),
        Case("lora_fo", "lora", first_order=True),
        Case("all_fo", "all", first_order=True),
        Case("top2_so", "top", first_order=False),
        # Not in the default set (heavy): checks that the peers which fail on frozen weights
        # run once everything adapts.
        Case("all_so", "all", first_order=False),
    )
}
DEFAULT_CASES = ("lora_so", "lora_fo", "all_fo", "top2_so")


@dataclass(frozen=True)
class Size:
    """How big one meta-step is."""

    n_way: int = 5
    k_shot: int = 5
    q_query: int = 5
    seq_len: int = 64
    meta_batch: int = 4
    inner_steps: int = 5
    inner_lr: float = 0.01

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class BenchEpisode:
    """The part of `metanlp.episodes.Episode` a meta-step reads: support, query, ``n_way``."""

    support: dict[str, Tensor]
    query: dict[str, Tensor]
    n_way: int


def random_token_episodes(
    n_way: int, shots: int, queries: int, seq_len: int, count: int, *, padded: float = 0.25
) -> list[BenchEpisode]:
    """``count`` episodes of random token ids, for measuring cost (which does not depend on words).

    Every row holds ids in ``[1000, 20000)`` with its last ``padded`` fraction masked out
    (attention mask 0); labels cycle through ``0 .. n_way - 1``. Ids come from torch's global
    generator: seed it first for the same ids in every process.

    Example:
        ```python
        >>> ep = random_token_episodes(5, 5, 5, 64, count=4)[0]
        >>> ep.support["input_ids"].shape, ep.query["labels"][:6].tolist()
        (torch.Size([25, 64]), [0, 1, 2, 3, 4, 0])
        ```
    """

    def part(per_class: int) -> dict[str, Tensor]:
        n = n_way * per_class
        ids = torch.randint(1000, 20000, (n, seq_len))
        mask = torch.ones_like(ids)
        mask[:, seq_len - int(seq_len * padded) :] = 0
        return {"input_ids": ids, "attention_mask": mask, "labels": torch.arange(n) % n_way}

    return [BenchEpisode(part(shots), part(queries), n_way) for _ in range(count)]


def build_model(case: Case, n_way: int) -> nn.Module:
    """The workload's model: `metanlp.models.FewShotModel` on MiniLM, eager attention, mean pooling.

    LoRA r=8 on query and value when ``case.params == "lora"``; ``requires_grad`` is set on
    exactly the adapted tensors, the same for every implementation.
    """
    from peft import LoraConfig

    from metanlp.meta.params import configure_trainable
    from metanlp.models import FewShotModel

    peft_config = None
    if case.params == "lora":
        peft_config = LoraConfig(r=8, lora_dropout=0.0, target_modules=["query", "value"])
    model = FewShotModel.from_pretrained(
        attn_implementation="eager", pooling="mean", max_ways=n_way, peft_config=peft_config
    )
    model.eval()  # dropout off: the implementations must compute the same function
    configure_trainable(model, adapted_names(model, case))
    return model


def adapted_names(model: nn.Module, case: Case) -> list[str]:
    """Names of the adapted tensors, in module order."""
    from metanlp.meta.params import select_parameters

    return select_parameters(model, case.params, top_layers=case.top_layers)


def init_tensors(model: nn.Module, case: Case) -> dict[str, Tensor]:
    """The randomly initialised tensors (head, LoRA) every implementation must start from."""
    return {
        n: p.detach().clone()
        for n, p in model.named_parameters()
        if n.startswith("head.") or "lora_" in n
    }


def load_init(model: nn.Module, tensors: Mapping[str, Tensor]) -> None:
    params = dict(model.named_parameters())
    missing = sorted(set(tensors) - set(params))
    if missing:
        raise ValueError(f"Initial tensors {missing[:4]} are not parameters of the model.")
    with torch.no_grad():
        for n, t in tensors.items():
            params[n].copy_(t)


def loss_fn(logits: Tensor, labels: Tensor) -> Tensor:
    return F.cross_entropy(logits, labels)


def to_device(ep: BenchEpisode, device: torch.device) -> BenchEpisode:
    move = lambda d: {k: v.to(device) for k, v in d.items()}  # noqa: E731
    return BenchEpisode(move(ep.support), move(ep.query), ep.n_way)


def model_inputs(batch: Mapping[str, Tensor], n_way: int) -> dict:
    kwargs = {k: batch[k] for k in MODEL_INPUT_KEYS if k in batch}
    kwargs["n_way"] = n_way
    return kwargs


def gradients(model: nn.Module, names: list[str]) -> dict[str, Tensor]:
    """``.grad`` of the named parameters (zeros where a tensor got none), detached CPU copies."""
    params = dict(model.named_parameters())
    return {
        n: (
            params[n].grad.detach().cpu().clone()
            if params[n].grad is not None
            else torch.zeros_like(params[n], device="cpu")
        )
        for n in names
    }


def zero_grads(model: nn.Module) -> None:
    for p in model.parameters():
        p.grad = None


# ---- episodes on disk ---------------------------------------------------------------------
def save_episodes(path: str | Path, episodes: list[BenchEpisode]) -> None:
    from safetensors.torch import save_file

    flat = {}
    for i, ep in enumerate(episodes):
        for part in ("support", "query"):
            for k, v in getattr(ep, part).items():
                flat[f"{i}.{part}.{k}"] = v.contiguous()
    meta = {"n_way": ",".join(str(ep.n_way) for ep in episodes)}
    save_file(flat, str(path), metadata=meta)


def load_episodes(path: str | Path) -> list[BenchEpisode]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        ways = [int(x) for x in f.metadata()["n_way"].split(",")]
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    episodes = []
    for i, n_way in enumerate(ways):
        parts: dict[str, dict[str, Tensor]] = {"support": {}, "query": {}}
        for key, value in tensors.items():
            idx, part, name = key.split(".", 2)
            if int(idx) == i:
                parts[part][name] = value
        episodes.append(BenchEpisode(parts["support"], parts["query"], n_way))
    return episodes
