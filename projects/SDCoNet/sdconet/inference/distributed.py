"""Whole-scene prediction over several processes and machines (torch.distributed, no detectron2).

``tools/predict.py`` runs either under ``torchrun`` (which sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``) or starts its own processes with ``--num-gpus N`` (and ``--num-machines M
--machine-rank r --dist-url tcp://host:port`` on every machine), through :func:`launch` (``torch.multiprocessing``,
``spawn``). Every process joins one ``gloo`` process group (it carries only Python objects: detections, counters),
predicts its share on its own device (``cuda:<local rank>`` when ``--device cuda``) and keeps the **raw tile
detections** of that share (no merging). Rank 0 gathers them and merges each scene (border suppression, NMS/WBF/...
after the gather) exactly as one process does: the raw detections are put in the order one process produces them
(:func:`canonical_order`), so with the same batch composition (e.g. ``--batch-size 1``) the outputs are identical.

What is shared (:func:`shard_mode`): the scenes, round-robin, when there are at least as many scenes as processes;
otherwise the **tile rows** of every scene (row ``k`` of the tile grid goes to rank ``k mod world``;
:func:`tile_row_shard`), so one huge raster is split too.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import numpy as np

from .accumulator import RawTileDetections
from .tiling import FULL_IMAGE_TILE, ScenePlan

__all__ = [
    "SHARD_MODES",
    "DistInfo",
    "ToolEntry",
    "canonical_order",
    "dist_info_from_env",
    "gather_to_main",
    "init_process_group",
    "launch",
    "raw_from_record",
    "raw_to_record",
    "shard_mode",
    "shard_scenes",
    "tile_row_shard",
]

SHARD_MODES = ("auto", "scenes", "tiles")


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def dist_info_from_env() -> DistInfo:
    """Rank and world size from the environment (``torchrun`` or :func:`launch`); one process when unset."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"bad distributed environment: RANK={rank}, WORLD_SIZE={world}")
    return DistInfo(rank, world, local)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class ToolEntry:
    """A picklable reference to a function of a tool script (``tools/*.py`` are not importable modules): the spawned
    process loads the file and calls ``function(argv)``."""

    path: str
    function: str

    def __call__(self, argv: list[str]) -> int:
        import importlib.util

        spec = importlib.util.spec_from_file_location(f"_sdconet_tool_{os.getpid()}", self.path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return int(getattr(module, self.function)(argv) or 0)


def _child(local_rank: int, worker: Callable[[list[str]], int], argv: list[str], env: dict[str, str]) -> None:
    nprocs = int(env["SDCONET_NPROC_PER_NODE"])
    os.environ.update(env)
    os.environ["LOCAL_RANK"] = str(local_rank)
    os.environ["RANK"] = str(int(env["SDCONET_MACHINE_RANK"]) * nprocs + local_rank)
    code = int(worker(argv) or 0)
    if code:
        sys.exit(code)


def launch(
    worker: Callable[[list[str]], int],
    argv: Sequence[str],
    num_procs: int,
    num_machines: int = 1,
    machine_rank: int = 0,
    dist_url: str = "auto",
) -> int:
    """Start ``num_procs`` processes on this machine running ``worker(argv)`` with the distributed environment set.

    Args:
        worker: the tool's entry point (called in each spawned process; returns an exit code).
        argv: its arguments.
        num_procs: processes on this machine (one per GPU; any number on CPU).
        num_machines: machines taking part (each runs the same command with its ``machine_rank``).
        machine_rank: this machine's index.
        dist_url: ``tcp://host:port`` of machine 0 (``auto``: 127.0.0.1 and a free port, one machine only).

    Returns:
        Rank 0's exit code on machine 0 (the first non-zero code of any process elsewhere).
    """
    import torch.multiprocessing as mp

    if num_procs < 1 or num_machines < 1 or not 0 <= machine_rank < num_machines:
        raise ValueError(
            f"--num-gpus {num_procs} / --num-machines {num_machines} / --machine-rank {machine_rank} are inconsistent"
        )
    if dist_url == "auto":
        if num_machines > 1:
            raise ValueError("--dist-url tcp://<machine 0>:<port> is needed with --num-machines > 1")
        host, port = "127.0.0.1", str(_free_port())
    else:
        if not dist_url.startswith("tcp://") or ":" not in dist_url[6:]:
            raise ValueError(f"--dist-url must look like tcp://host:port, got {dist_url!r}")
        host, port = dist_url[6:].rsplit(":", 1)
    env = {
        "MASTER_ADDR": host,
        "MASTER_PORT": port,
        "WORLD_SIZE": str(num_procs * num_machines),
        "SDCONET_NPROC_PER_NODE": str(num_procs),
        "SDCONET_MACHINE_RANK": str(machine_rank),
    }
    context = mp.start_processes(
        _child, args=(worker, list(argv), env), nprocs=num_procs, join=False, start_method="spawn"
    )
    codes: dict[int, int] = {}
    while True:
        try:
            if context.join():
                break
        except mp.ProcessExitedException as exc:
            codes[exc.error_index] = int(exc.exit_code)
            # Another process may still be running; join the rest.
            for p in context.processes:
                p.join()
            for i, p in enumerate(context.processes):
                codes.setdefault(i, int(p.exitcode or 0))
            break
        except mp.ProcessRaisedException as exc:
            sys.stderr.write(str(exc) + "\n")
            for p in context.processes:
                p.join()
            return 1
    if machine_rank == 0 and codes.get(0):
        return codes[0]
    return next((c for c in codes.values() if c), 0)


def init_process_group(info: DistInfo, timeout_minutes: float = 24 * 60) -> None:
    """Join the ``gloo`` group of the run (a no-op for one process)."""
    if not info.distributed:
        return
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(
            "gloo",
            init_method="env://",
            rank=info.rank,
            world_size=info.world_size,
            timeout=timedelta(minutes=timeout_minutes),
        )


def destroy_process_group(info: DistInfo) -> None:
    if info.distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.distributed:
        import torch.distributed as dist

        dist.barrier()


def broadcast_from_main(obj: Any, info: DistInfo) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not info.distributed:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_to_main(obj: Any, info: DistInfo) -> list[Any] | None:
    """Every rank's ``obj`` on rank 0 (in rank order); None on the other ranks."""
    if not info.distributed:
        return [obj]
    import torch.distributed as dist

    out = [None] * info.world_size if info.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out


# ------------------------------------------------------------------------------------------------------ sharding
def shard_mode(requested: str, num_scenes: int, info: DistInfo) -> str:
    """``"scenes"`` or ``"tiles"`` (``auto``: scenes when there are at least as many as processes)."""
    if requested not in SHARD_MODES:
        raise ValueError(f"--shard must be one of {SHARD_MODES}, got {requested!r}")
    if requested != "auto":
        return requested
    return "scenes" if num_scenes >= info.world_size else "tiles"


def shard_scenes(items: Sequence[Any], info: DistInfo) -> list[Any]:
    """This rank's scenes: every ``world_size``-th, starting at its rank."""
    return list(items[info.rank :: info.world_size])


def tile_row_shard(info: DistInfo) -> Callable[[ScenePlan], ScenePlan]:
    """A plan filter keeping the tile rows ``k`` with ``k mod world_size == rank`` (the whole-scene pass: rank 0)."""

    def shard(plan: ScenePlan) -> ScenePlan:
        rows = sorted({win[1] for _, win in plan.tiles})
        row_of = {y: k for k, y in enumerate(rows)}
        tiles = tuple(t for t in plan.tiles if row_of[t[1][1]] % info.world_size == info.rank)
        return replace(plan, tiles=tiles, full_image=plan.full_image and info.is_main)

    return shard


# --------------------------------------------------------------------------------------------- raw detections
def canonical_order(raw: RawTileDetections) -> RawTileDetections:
    """Raw detections in the order one process collects them: by tile id, the whole-scene pass last, and within a
    tile in the detector's order (a stable sort)."""
    key = np.where(raw.tile_ids == FULL_IMAGE_TILE, np.iinfo(np.int64).max, raw.tile_ids)
    order = np.argsort(key, kind="stable")
    return RawTileDetections(
        raw.boxes[order], raw.scores[order], raw.labels[order], raw.cut[order], raw.tile_ids[order]
    )


def raw_to_record(raw: RawTileDetections) -> dict[str, list]:
    """Lossless JSON-able form (float32 values survive a JSON round trip exactly)."""
    return {
        "raw_boxes": raw.boxes.astype(np.float32).reshape(-1, 4).tolist(),
        "raw_scores": raw.scores.astype(np.float32).tolist(),
        "raw_labels": raw.labels.astype(np.int64).tolist(),
        "raw_cut": raw.cut.astype(bool).tolist(),
        "raw_tile_ids": raw.tile_ids.astype(np.int64).tolist(),
    }


def raw_from_record(record: dict[str, Any]) -> RawTileDetections:
    return RawTileDetections(
        np.asarray(record["raw_boxes"], dtype=np.float32).reshape(-1, 4),
        np.asarray(record["raw_scores"], dtype=np.float32).reshape(-1),
        np.asarray(record["raw_labels"], dtype=np.int64).reshape(-1),
        np.asarray(record["raw_cut"], dtype=bool).reshape(-1),
        np.asarray(record["raw_tile_ids"], dtype=np.int64).reshape(-1),
    )
