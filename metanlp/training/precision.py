"""Choosing the numeric precision of meta-training by measurement (``mixed_precision: auto``).

bf16 autocast pays only where the chip multiplies bf16 faster than fp32 (AMX, AVX-512 BF16, GPU
tensor cores); elsewhere bf16 is emulated and slower. So ``auto`` does not guess from the CPU's
name or flags: it times the same square matmul in both dtypes on the training device and uses
bf16 autocast only when bf16 is clearly faster. Master weights and optimiser state stay fp32
either way (autocast casts copies for the matmuls).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

PROBE_SIZE = 512
"""Side of the probe's square matrices: big enough to reach the matmul kernels' speed, small
enough (a few ms each) to probe at every trainer start."""

BF16_MIN_SPEEDUP = 1.3
"""bf16 must beat fp32 by this factor for ``auto`` to choose it. A margin, not a fit: on the
2-core AVX-512 BF16 EPYC a 2.3x matmul gain became about 1.7x on a ProtoNet meta-step
(`benchmarks/bench_roofline.py`; casts and non-matmul work do not speed up), so a chip whose bf16
matmul is barely faster would gain little, and timing noise must not flip the choice."""


def matmul_flops_per_s(
    dtype: torch.dtype,
    size: int = PROBE_SIZE,
    repeats: int = 5,
    device: str | torch.device = "cpu",
) -> float:
    """Best-of-``repeats`` FLOP/s of one ``size x size`` by ``size x size`` `torch.matmul`.

    The best rather than the mean, because on a shared machine slow repeats measure the
    neighbours, not the chip. Uses the current `torch.get_num_threads`.

    Args:
        dtype (`torch.dtype`): ``torch.float32``, ``torch.bfloat16``, ...
        size (`int`, defaults to 512): Matrix side; ``2 * size**3`` FLOPs per product.
        repeats (`int`, defaults to 5): Timed products (after one warm-up).
        device (`str` or `torch.device`, defaults to ``"cpu"``): Where to multiply.

    Example:
        ```python
        >>> matmul_flops_per_s(torch.bfloat16) / matmul_flops_per_s(torch.float32)
        2.1
        ```
    """
    device = torch.device(device)
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)
    b = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.matmul(a, b)
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.matmul(a, b)
        sync()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / max(best, 1e-9)


@dataclass(frozen=True)
class PrecisionChoice:
    """What ``mixed_precision: auto`` chose and why (the trainer prints `describe`)."""

    mixed_precision: str
    fp32_flops: float
    bf16_flops: float

    @property
    def speedup(self) -> float:
        return self.bf16_flops / self.fp32_flops

    def describe(self) -> str:
        path = "bf16 autocast" if self.mixed_precision == "bf16" else "fp32"
        return (
            f"precision: {path} (mixed_precision=auto: a {PROBE_SIZE}x{PROBE_SIZE} matmul probe ran "
            f"{self.fp32_flops / 1e9:.0f} GFLOP/s in fp32 and {self.bf16_flops / 1e9:.0f} in bf16, "
            f"{self.speedup:.2f}x; bf16 is used from {BF16_MIN_SPEEDUP}x; weights and optimiser "
            "state stay fp32)"
        )


def probe_precision(
    device: str | torch.device = "cpu", rounds: int = 3, min_speedup: float = BF16_MIN_SPEEDUP
) -> PrecisionChoice:
    """Time fp32 and bf16 matmuls on ``device`` and pick ``"bf16"`` or ``"no"``.

    The two dtypes alternate over ``rounds`` so that a burst of load on a shared machine hits
    both; each keeps its best. About 0.3 s on a busy 2-core CPU.

    Args:
        device (`str` or `torch.device`, defaults to ``"cpu"``): The training device.
        rounds (`int`, defaults to 3): Alternations of the two probes.
        min_speedup (`float`, defaults to `BF16_MIN_SPEEDUP`): How much faster bf16 must be.

    Returns:
        `PrecisionChoice`: ``mixed_precision`` is ``"bf16"`` when bf16 ran at least
        ``min_speedup`` times faster, else ``"no"`` (fp32).
    """
    fp32 = bf16 = 0.0
    for _ in range(rounds):
        fp32 = max(fp32, matmul_flops_per_s(torch.float32, device=device))
        bf16 = max(bf16, matmul_flops_per_s(torch.bfloat16, device=device))
    choice = "bf16" if bf16 >= min_speedup * fp32 else "no"
    return PrecisionChoice(choice, fp32, bf16)


def resolve_mixed_precision(
    setting: str, cpu: bool, min_speedup: float = BF16_MIN_SPEEDUP
) -> tuple[str, str]:
    """The Accelerate ``mixed_precision`` a config's setting means here, and a line saying so.

    ``"auto"`` probes the device (`probe_precision`) on the main process and, in a
    multi-process run, hands its choice to every process, so that all train in one precision.
    Any other setting is returned as it is.

    Args:
        setting (`str`): ``MetaTrainerConfig.mixed_precision`` (``"no"``, ``"bf16"``,
            ``"fp16"`` or ``"auto"``).
        cpu (`bool`): Whether the run is forced onto the CPU (Accelerate's ``cpu``).
        min_speedup (`float`, defaults to `BF16_MIN_SPEEDUP`): `probe_precision`'s threshold.

    Returns:
        `tuple[str, str]`: ``("no" | "bf16" | "fp16", description of the chosen path)``.
    """
    if setting != "auto":
        path = {"no": "fp32", "bf16": "bf16 autocast", "fp16": "fp16 autocast + loss scaling"}
        return setting, f"precision: {path[setting]} (mixed_precision={setting})"
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list

    state = PartialState(cpu=cpu)  # the process group Accelerator() then reuses
    box: list[PrecisionChoice | None] = [None]
    if state.is_main_process:
        box[0] = probe_precision(state.device, min_speedup=min_speedup)
    if state.num_processes > 1:
        broadcast_object_list(box, from_process=0)
    choice = box[0]
    assert choice is not None
    return choice.mixed_precision, choice.describe()
