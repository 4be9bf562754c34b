"""Random-number state for exact resume (framework-free).

A training run is reproducible step by step when every random draw is a function of the run's seed and *where* it
happens, not of how many draws came before:

* :func:`derive_seed` turns ``(seed, *keys)`` (e.g. ``(seed, "step", iteration, rank)`` or ``(seed, stream
  position)``) into an independent 63-bit seed (NumPy's ``SeedSequence``).
* :func:`seed_everything` seeds Python's ``random``, NumPy's global RNG, torch (CPU and every CUDA device) and the
  ``torch.Generator`` objects a model holds; the trainer calls it before every step with the step's derived seed,
  so evaluation, data-loader start-up or a resume in between cannot shift the random stream.
* :func:`seeded` does the same for a block and restores the previous state afterwards (per-sample augmentation in
  data-loader workers, whose RNG cannot be saved from the main process).
* :func:`capture_rng_state` / :func:`restore_rng_state` save and restore all of these states (stored with each
  checkpoint).

On GPU, bit-identity also needs deterministic kernels; see the project README (atomics in the deformable-attention
backward make GPU runs differ in the last bits).
"""

# NumPy's legacy global RNG is used on purpose: detectron2's augmentations (and user code) draw from it.
# ruff: noqa: NPY002
from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "capture_rng_state",
    "derive_seed",
    "model_generators",
    "restore_rng_state",
    "seed_everything",
    "seeded",
]


def _key_entropy(key: Any) -> list[int]:
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        return [int(key) & 0xFFFFFFFF, (int(key) >> 32) & 0xFFFFFFFF]
    data = str(key).encode("utf-8")
    return [int.from_bytes(data[i : i + 4].ljust(4, b"\0"), "little") for i in range(0, len(data), 4)] or [0]


def derive_seed(seed: int, *keys: Any) -> int:
    """An independent seed in ``[0, 2**63)`` for ``keys`` (ints or strings) under the run's ``seed``."""
    entropy = _key_entropy(seed)
    for key in keys:
        entropy += [len(entropy)] + _key_entropy(key)  # separator: (1, 23) != (12, 3)
    state = np.random.SeedSequence(entropy).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


def model_generators(model: nn.Module | None) -> dict[str, torch.Generator]:
    """``{"<module path>.<attribute>": generator}`` of every ``torch.Generator`` a model's modules hold."""
    if model is None:
        return {}
    out = {}
    for name, module in model.named_modules():
        for attr, value in vars(module).items():
            if isinstance(value, torch.Generator):
                out[f"{name}.{attr}" if name else attr] = value
    return out


def seed_everything(seed: int, model: nn.Module | None = None) -> None:
    """Seed Python, NumPy, torch (CPU + CUDA) and the model's generators from ``seed``."""
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed & 0xFFFFFFFF)
    torch.manual_seed(seed)  # also every CUDA device
    for name, gen in model_generators(model).items():
        gen.manual_seed(derive_seed(seed, name))


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Within the block, Python's ``random``, NumPy's global RNG and torch's CPU RNG start from ``seed``; their
    previous states are restored afterwards."""
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        random.seed(int(seed))
        np.random.seed(int(seed) & 0xFFFFFFFF)
        torch.manual_seed(int(seed))
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def capture_rng_state(model: nn.Module | None = None) -> dict[str, Any]:
    """The states of Python's ``random``, NumPy's global RNG, torch CPU / CUDA and the model's generators (as
    tensors, numbers and tuples, so that a checkpoint holding them loads with ``torch.load(weights_only=True)``)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        # tensors and plain numbers only: checkpoints load with torch.load(weights_only=True)
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
        "model_generators": {name: g.get_state() for name, g in model_generators(model).items()},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any], model: nn.Module | None = None) -> None:
    """Undo :func:`capture_rng_state` (model generators are matched by name; CUDA states only when present)."""
    random.setstate(_as_python_state(state["python"]))
    n = state["numpy"]
    keys = n["keys"].numpy() if isinstance(n["keys"], torch.Tensor) else np.asarray(n["keys"])
    np.random.set_state((n["kind"], keys.astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    gens = model_generators(model)
    for name, value in state.get("model_generators", {}).items():
        if name in gens:
            gens[name].set_state(value)


def _as_python_state(value: Any) -> tuple:
    """``random.setstate`` needs tuples; a checkpoint round trip may have turned them into lists."""
    if isinstance(value, list):
        return tuple(_as_python_state(v) for v in value)
    return value
