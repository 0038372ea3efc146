"""The peer side of the speed/memory comparison: one identical MAML workload per library.

``IMPLEMENTATIONS`` maps a name to ``"module:function"``; each function takes
``(model, case, size)`` and returns a meta-step ``step(episodes)`` that accumulates the mean
meta-gradient over the episodes into the adapted parameters' ``.grad``. `worker` runs one of
them in its own process.
"""

from __future__ import annotations

IMPLEMENTATIONS: dict[str, str] = {
    "metanlp": "benchmarks.peers.metanlp_impl:make_stepper",
    "learn2learn": "benchmarks.peers.learn2learn_impl:make_stepper",
    "torchopt": "benchmarks.peers.torchopt_impl:make_stepper",
    "torchopt_metasgd": "benchmarks.peers.torchopt_impl:make_metasgd_stepper",
    "higher": "benchmarks.peers.higher_impl:make_stepper",
}
"""Implementation name -> factory, ``metanlp`` first (it is the reference of the comparison)."""
