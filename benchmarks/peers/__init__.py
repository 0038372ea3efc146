"""The peer side of the speed/memory comparison: one identical MAML workload per library.

``IMPLEMENTATIONS`` maps a name to ``"module:function"``; each function takes
``(model, case, size)`` and returns a meta-step ``step(episodes)`` that accumulates the mean
meta-gradient over the episodes into the adapted parameters' ``.grad``. `worker` runs one of
them in its own process.
"""

from __future__ import annotations

IMPLEMENTATIONS: dict[str, str] = {
    "metanlp": "benchmarks.peers.metanlp_impl:make_stepper",
    "metanlp_plain": "benchmarks.peers.metanlp_impl:make_plain_stepper",
    "metanlp_ckpt": "benchmarks.peers.metanlp_impl:make_ckpt_stepper",
    "metanlp_vmap": "benchmarks.peers.metanlp_impl:make_vmap_stepper",
    "learn2learn": "benchmarks.peers.learn2learn_impl:make_stepper",
    "torchopt": "benchmarks.peers.torchopt_impl:make_stepper",
    "torchopt_metasgd": "benchmarks.peers.torchopt_impl:make_metasgd_stepper",
    "higher": "benchmarks.peers.higher_impl:make_stepper",
}
"""Implementation name -> factory, ``metanlp`` first (its default config is the reference of the
comparison; ``metanlp_*`` are its efficiency modes)."""

DEFAULT_IMPLEMENTATIONS = ("metanlp", "learn2learn", "torchopt", "torchopt_metasgd", "higher")
