"""Choosing which tensors of a `FewShotModel` adapt (inner loop) or meta-learn (outer loop).

Parameters are chosen by name, so the fast-weight dict of the inner loop holds exactly the
adapted tensors and nothing else: frozen weights stay in the module and are never copied.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from torch import nn

from metanlp.models import HEAD_PARAMETER_NAMES, FewShotModel
from metanlp.spec import PARAMETER_SETS

ParamSelection = str | Sequence[str]

_NO_BOTTLENECK = (
    "PEFT {version} offers no bottleneck (Houlsby/Pfeiffer) adapters for BERT, so params='adapter' "
    "selects the tensors of whichever other PEFT method wraps the encoder. Build the model with "
    "FewShotModel(..., peft_config=IA3Config(...)) (or LoHaConfig, LoKrConfig, VeraConfig, ...), "
    "or use params='lora' with a LoraConfig, or params='top' / 'head' / 'all'."
)


def select_parameters(
    model: FewShotModel, which: ParamSelection = "all", *, top_layers: int = 1
) -> list[str]:
    """Names (as in ``model.named_parameters()``) of a parameter subset, in module order.

    Args:
        model (`FewShotModel`): the model whose parameters are chosen.
        which (`str` or sequence of `str`, defaults to ``"all"``):
            ``"all"`` every parameter; ``"body"`` every parameter but the token-embedding matrix
            (the vocabulary rows: a few examples move only their own tokens' rows, while the
            matrix's gradient and optimiser state are about half of the model's); ``"top"`` the top ``top_layers`` encoder layers + head;
            ``"head"`` the head only; ``"lora"`` the PEFT LoRA tensors + head (the model must be
            built with a ``LoraConfig``); ``"adapter"`` the tensors of a non-LoRA PEFT method
            + head. A sequence of explicit parameter names is accepted as is (checked to exist).
        top_layers (`int`, defaults to 1): how many top layers ``"top"`` takes.

    Example:
        ```python
        >>> select_parameters(model, "top", top_layers=1)[-2:]
        ['head.weight', 'head.bias']
        ```
    """
    names = [n for n, _ in model.named_parameters()]
    if not isinstance(which, str):
        chosen = list(which)
        missing = sorted(set(chosen) - set(names))
        if missing:
            raise ValueError(
                f"Unknown parameter names {missing[:5]}{' ...' if len(missing) > 5 else ''}; "
                f"names come from model.named_parameters(), e.g. {names[:3]}."
            )
        if not chosen:
            raise ValueError("An explicit parameter selection must name at least one parameter.")
        return [n for n in names if n in set(chosen)]
    if which not in PARAMETER_SETS:
        raise ValueError(
            f"params={which!r} is not a parameter set; use one of {PARAMETER_SETS} "
            "or a list of parameter names."
        )
    head = list(HEAD_PARAMETER_NAMES)
    if which == "all":
        return names
    if which == "body":
        vocab = model.encoder.get_input_embeddings().weight
        return [n for n, p in model.named_parameters() if p is not vocab]
    if which == "head":
        return head
    if which == "top":
        n_layers = model.num_layers
        if not isinstance(top_layers, int) or not 1 <= top_layers <= n_layers:
            raise ValueError(
                f"top_layers={top_layers!r} must be an int in 1..{n_layers} (the encoder's layers)."
            )
        first = n_layers - top_layers
        picked = [n for n in names if (i := model.layer_of(n)) is not None and i >= first]
        return [n for n in names if n in set(picked) or n in head]
    peft_names = set(model.peft_parameter_names)
    if which == "lora":
        if not model.is_lora:
            raise ValueError(
                f"params='lora' needs an encoder wrapped with a PEFT LoraConfig, but this model has "
                f"peft_type={model.peft_type!r}. Build it with FewShotModel(..., peft_config="
                "LoraConfig(r=8)) or choose another params value."
            )
    else:  # adapter
        if model.peft_type is None:
            import peft

            raise ValueError(_NO_BOTTLENECK.format(version=peft.__version__))
        if model.is_lora:
            raise ValueError(
                "params='adapter' was asked but the encoder carries LoRA; use params='lora' for it."
            )
    return [n for n in names if n in peft_names or n in head]


def configure_trainable(model: nn.Module, names: Iterable[str]) -> None:
    """Set ``requires_grad`` to True exactly for ``names`` (the rest are frozen: no gradient, no copy)."""
    keep = set(names)
    for name, param in model.named_parameters():
        param.requires_grad_(name in keep)
