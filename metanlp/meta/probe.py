"""The linear probe: logistic regression on a frozen encoder's L2-normalised sentence embeddings.

The simplest strong few-shot baseline (SetFit's head without SetFit's contrastive training of
the body), defined once here for both users: the frozen logistic-regression baseline
(`metanlp.baselines.FrozenLogisticRegression`) and the adaptation policy's ``"frozen-lr"``
candidate (`metanlp.meta.policy`). The classifier is scikit-learn's ``LogisticRegression``
(L2, ``C``, L-BFGS, multinomial); it is kept as two plain tensors, ``W`` ``(N, H)`` and ``b``
``(N,)``, under `PROBE_PARAMETER_NAMES` in a fast-weight dict, so an adapted task holding a
probe saves and loads like any head. Its logits ``normalize(f(x)) @ W.T + b`` give
scikit-learn's ``predict_proba`` under a softmax (a binary problem's one coefficient row
becomes the two rows ``∓w/2``, ``∓b/2``, whose softmax is the same sigmoid).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from metanlp.meta.efficient import PREFIX_KEY, layered_embed
from metanlp.meta.helpers import model_mode
from metanlp.models import PROBE_PARAMETER_NAMES, FewShotModel, model_inputs

ABSENT_CLASS_BIAS = -1e9
"""The bias of a class the probe never saw (no support example): it is never predicted."""


@torch.no_grad()
def probe_features(model: FewShotModel, batch: Mapping[str, Tensor]) -> Tensor:
    """``(B, H)`` L2-normalised pooled embeddings of the frozen ``model`` (eval mode, no graph).

    The pooling is the model's own (``"mean"`` for the sentence-transformers default). A batch
    carrying the frozen prefix (`metanlp.meta.efficient`) runs only the layers above it.
    """
    device = next(model.parameters()).device
    with model_mode(model, False):
        if PREFIX_KEY in batch:
            features = layered_embed(model, {}, batch)
        else:
            features = model.embed(**model_inputs(dict(batch), device))
    return F.normalize(features, dim=-1)


def fit_probe(
    features: Tensor,
    labels: Tensor,
    n_classes: int,
    *,
    C: float = 1.0,
    max_iter: int = 1000,
    sample_weight: Tensor | None = None,
) -> dict[str, Tensor]:
    """Fit the probe on (normalised) features; returns ``{"probe.weight", "probe.bias"}``.

    Args:
        features (`Tensor`): ``(B, H)``, from `probe_features`.
        labels (`Tensor`): ``(B,)`` class ids in ``0..n_classes-1``.
        n_classes (`int`): Rows of the probe; a class without examples gets a zero row and
            the bias `ABSENT_CLASS_BIAS`.
        C (`float`, defaults to 1.0): Inverse L2 strength (scikit-learn's default, SetFit's).
        max_iter (`int`, defaults to 1000): L-BFGS iterations.
        sample_weight (`Tensor`, *optional*): ``(B,)`` weights of the examples (scikit-learn's
            ``sample_weight``); the policy's folds use it to keep the support set's class
            proportions (see `fold_weights`).

    Example:
        ```python
        >>> probe = fit_probe(probe_features(model, support), support["labels"], 3)
        >>> probe_logits(model, probe, query).argmax(-1)
        ```
    """
    from sklearn.linear_model import LogisticRegression

    y = labels.detach().cpu().numpy()
    classes = sorted(set(y.tolist()))
    if len(classes) < 2:
        raise ValueError(
            f"The linear probe needs examples of at least 2 classes; got only {classes}."
        )
    clf = LogisticRegression(C=float(C), max_iter=int(max_iter))
    weights = None if sample_weight is None else sample_weight.detach().double().cpu().numpy()
    clf.fit(features.detach().double().cpu().numpy(), y, sample_weight=weights)
    coef = torch.as_tensor(clf.coef_, dtype=torch.float64)
    intercept = torch.as_tensor(clf.intercept_, dtype=torch.float64)
    if coef.shape[0] == 1:  # binary: sigmoid(z) = softmax([-z/2, z/2])[1]
        coef, intercept = (
            torch.cat([-coef / 2, coef / 2]),
            torch.cat([-intercept / 2, intercept / 2]),
        )
    weight = torch.zeros(n_classes, features.shape[-1], dtype=torch.float64)
    bias = torch.full((n_classes,), ABSENT_CLASS_BIAS, dtype=torch.float64)
    rows = torch.as_tensor(clf.classes_, dtype=torch.long)
    weight[rows], bias[rows] = coef, intercept
    dtype, device = features.dtype, features.device
    return {
        PROBE_PARAMETER_NAMES[0]: weight.to(device=device, dtype=dtype),
        PROBE_PARAMETER_NAMES[1]: bias.to(device=device, dtype=dtype),
    }


def fold_weights(labels: Tensor, rows: list[int]) -> Tensor:
    """Example weights that give a fold (``rows`` of ``labels``) the whole set's class shares.

    A stratified fold of an odd number of shots is unbalanced (3 examples of one class, 2 of
    another), and a probe this small leans on its intercepts: fitted on the raw fold it favours
    the larger classes and cross-validation underrates the probe that the balanced whole set
    gives. Weight ``(n_c / N) / (m_c / M)`` for class ``c`` (``n_c`` of ``N`` in the whole set,
    ``m_c`` of ``M`` in the fold) restores the shares; the weights average 1, so ``C`` keeps
    its meaning.
    """
    labels = labels.detach().cpu()
    fold = labels[torch.as_tensor(rows, dtype=torch.long)]
    whole = torch.bincount(labels).double() / len(labels)
    part = torch.bincount(fold, minlength=len(whole)).double() / len(fold)
    return (whole / part.clamp_min(1e-12))[fold]


def has_probe(fast: Mapping[str, Tensor]) -> bool:
    """Whether a fast-weight dict is a linear probe (see `fit_probe`)."""
    return PROBE_PARAMETER_NAMES[0] in fast


@torch.no_grad()
def probe_logits(
    model: FewShotModel, fast: Mapping[str, Tensor], batch: Mapping[str, Tensor], n_way: int
) -> Tensor:
    """``(B, n_way)`` logits of a fitted probe over the frozen ``model``'s embeddings of ``batch``."""
    weight, bias = (fast[n] for n in PROBE_PARAMETER_NAMES)
    if weight.shape[0] < n_way:
        raise ValueError(f"n_way={n_way} but the linear probe has {weight.shape[0]} rows.")
    features = probe_features(model, batch)
    return F.linear(features, weight[:n_way].to(features), bias[:n_way].to(features))
