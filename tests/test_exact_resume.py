"""Class 6 of issue 12: a stopped and resumed training run equals the uninterrupted one, bit for bit on CPU.

Framework-free parts (run in CI): the deterministic stream (batch i and each sample's augmentation are functions of
(seed, i) whatever the number of DataLoader workers), RNG-state capture through a weights-only checkpoint, and a
stop/resume of the real tiny SDCoNet in a plain training loop. With detectron2: the real trainer with one DataLoader
worker and random flips, stopped after an epoch across the SR stage switch and resumed with --resume semantics.
"""

# The global NumPy RNG is used on purpose: detectron2's augmentations draw from it.
# ruff: noqa: NPY002
import json
import random

import numpy as np
import pytest
import torch

from sdconet.data.sampling import KeyedDataset, StreamBatchSampler
from sdconet.engine.determinism import (
    capture_rng_state,
    derive_seed,
    restore_rng_state,
    seed_everything,
    seeded,
)
from sdconet.modeling.build import build_sdconet
from sdconet.modeling.config import SDCoNetConfig

torch.set_num_threads(1)


def test_stream_batches_are_a_function_of_seed_and_iteration():
    s = StreamBatchSampler(size=7, batch_size=3, seed=5)
    it = iter(s)
    first = [next(it) for _ in range(10)]
    assert first == [s.batch(i) for i in range(10)]
    resumed = StreamBatchSampler(size=7, batch_size=3, seed=5, start_iter=4)
    assert [b for b, _ in zip(resumed, range(6))] == first[4:10]
    stream = [idx for batch in first for idx, _ in batch]
    for e in range(4):  # every epoch is a permutation of the dataset, a different one per epoch
        assert sorted(stream[7 * e : 7 * e + 7]) == list(range(7))
    assert stream[:7] != stream[7:14]
    assert (
        len({seed for batch in first for _, seed in batch}) == 30
    )  # one augmentation seed per stream position
    # Two ranks split every global batch; together they read the single-process stream.
    ranks = [StreamBatchSampler(7, 3, 5, rank=r, world_size=2) for r in (0, 1)]
    single = StreamBatchSampler(7, 6, 5)
    assert all(ranks[0].batch(i) + ranks[1].batch(i) == single.batch(i) for i in range(5))
    assert StreamBatchSampler(7, 3, 6).batch(0) != s.batch(0)


def _flip_map(record):
    """A 'mapper' drawing from the global NumPy / Python / torch RNGs like detectron2's augmentations do."""
    image = record["image"]
    if np.random.rand() < 0.5:
        image = image[:, ::-1]
    return {"index": record["index"], "image": image.copy(), "r": random.random(), "t": torch.rand(1).item()}


def _loader(num_workers, start_iter=0):
    items = [{"index": i, "image": np.arange(12).reshape(3, 4) + i} for i in range(5)]
    sampler = StreamBatchSampler(len(items), 2, seed=11, start_iter=start_iter)
    return torch.utils.data.DataLoader(
        KeyedDataset(items, _flip_map), batch_sampler=sampler, num_workers=num_workers, collate_fn=lambda b: b
    )


def _take(loader, n):
    out = []
    for batch, _ in zip(loader, range(n)):
        out.append([(b["index"], b["image"].tobytes(), b["r"], b["t"]) for b in batch])
    return out


def test_augmentation_randomness_does_not_depend_on_workers_or_resume():
    single = _take(_loader(0), 8)
    assert len({b[0][1] for b in single}) > 1  # flips happen
    assert _take(_loader(1), 8) == single  # one worker process: the same samples, flips and draws
    assert _take(_loader(2), 8) == single
    assert _take(_loader(1, start_iter=5), 3) == single[5:8]  # resumed at batch 5
    state = np.random.get_state()[1].copy()
    with seeded(3):
        np.random.rand()
    assert (np.random.get_state()[1] == state).all()  # the caller's RNG is untouched


def test_rng_state_survives_a_weights_only_checkpoint(tmp_path):
    seed_everything(1)
    state = capture_rng_state()
    torch.save({"rng": state}, tmp_path / "ckpt.pth")
    a = (random.random(), np.random.rand(), torch.rand(3))
    seed_everything(2)
    restore_rng_state(torch.load(tmp_path / "ckpt.pth", weights_only=True)["rng"])
    b = (random.random(), np.random.rand(), torch.rand(3))
    assert a[:2] == b[:2] and torch.equal(a[2], b[2])
    assert derive_seed(1, 2, 3) != derive_seed(1, 23) and derive_seed(1, "step", 4) == derive_seed(
        1, "step", 4
    )


def _train(model, opt, sampler, data, steps, seed):
    """A plain training loop: per-step seeding, the deterministic stream, DINO denoising noise included."""
    it = iter(
        torch.utils.data.DataLoader(KeyedDataset(data, _sample_map), batch_sampler=sampler, collate_fn=list)
    )
    for _ in range(steps):
        step = sampler.start_iter
        seed_everything(derive_seed(seed, "step", step), model)
        batch = next(it)
        images = torch.stack([b["image"] for b in batch])
        targets = [b["target"] for b in batch]
        losses = model(images, None, targets)
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
        sampler.start_iter += 1  # (the next batch comes from the iterator; this only tracks the step index)


def _sample_map(record):
    image = torch.from_numpy(record["image"].copy())
    boxes = torch.tensor(record["boxes"])
    if np.random.rand() < 0.5:  # random horizontal flip
        image = image.flip(-1)
        boxes[:, 0] = 1 - boxes[:, 0]
    return {"image": image, "target": {"labels": torch.tensor(record["labels"]), "boxes": boxes}}


def test_stop_and_resume_of_a_plain_loop_is_bit_identical(tmp_path):
    rng = np.random.default_rng(0)
    data = [
        {
            "image": rng.normal(size=(3, 32, 32)).astype(np.float32),
            "boxes": [[0.3, 0.4, 0.2, 0.2], [0.7, 0.6, 0.1, 0.3]],
            "labels": [0, 2],
        }
        for _ in range(5)
    ]

    def fresh():
        torch.manual_seed(0)
        model = build_sdconet(SDCoNetConfig.tiny(num_classes=3, variant="dino")).train()
        return model, torch.optim.AdamW(model.parameters(), lr=1e-3)

    model, opt = fresh()
    _train(model, opt, StreamBatchSampler(5, 2, seed=7), data, 4, seed=7)
    uninterrupted = {k: v.clone() for k, v in model.state_dict().items()}

    model, opt = fresh()
    _train(model, opt, StreamBatchSampler(5, 2, seed=7), data, 2, seed=7)
    torch.save(
        {"model": model.state_dict(), "opt": opt.state_dict(), "rng": capture_rng_state(model)},
        tmp_path / "c.pth",
    )
    seed_everything(123)  # whatever happens in between
    model, opt = fresh()
    ckpt = torch.load(tmp_path / "c.pth", weights_only=True)
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["opt"])
    restore_rng_state(ckpt["rng"], model)
    _train(model, opt, StreamBatchSampler(5, 2, seed=7, start_iter=2), data, 2, seed=7)
    resumed = model.state_dict()
    assert all(torch.equal(uninterrupted[k], resumed[k]) for k in uninterrupted)
    assert not all(torch.equal(uninterrupted[k], v) for k, v in fresh()[0].state_dict().items())  # it trained


# ------------------------------------------------------------------------------------------------------- detectron2
class _Stop(Exception):
    pass


@pytest.fixture(scope="module")
def synth6(tmp_path_factory):
    pytest.importorskip("detectron2")
    from detectron2.data import DatasetCatalog

    from sdconet.d2.datasets import register_checked_coco_instances
    from sdconet.data.synthetic import SYNTHETIC_CLASSES, ensure_synthetic_dataset

    root = tmp_path_factory.mktemp("synth6")
    paths = ensure_synthetic_dataset(root, num_train=6, num_test=2, tile_size=64, max_object_size=28)
    names = {"train": "_exact_resume_train", "test": "_exact_resume_test"}
    for split, name in names.items():
        if name not in DatasetCatalog.list():
            meta = {"thing_classes": list(SYNTHETIC_CLASSES)}
            register_checked_coco_instances(name, meta, paths[f"{split}_json"], paths[f"{split}_images"])
    return names


def test_real_trainer_stop_and_resume_is_bit_identical(synth6, tmp_path):
    from pathlib import Path

    from detectron2.engine import HookBase

    from sdconet.d2 import SDCoNetTrainer, setup_cfg

    quick = Path(__file__).resolve().parents[1] / "projects" / "SDCoNet" / "configs" / "quick_synthetic.yaml"

    def cfg_for(out, seed):
        opts = [
            "DATASETS.TRAIN", f"('{synth6['train']}',)", "DATASETS.TEST", f"('{synth6['test']}',)",
            "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_EPOCHS", "3", "SOLVER.STEPS_EPOCHS", "[2]",
            "SOLVER.SR_START_EPOCH", "1", "SOLVER.CHECKPOINT_PERIOD_EPOCHS", "1", "INPUT.RANDOM_FLIP", "horizontal",
            "DATALOADER.NUM_WORKERS", "1", "TEST.EVAL_PERIOD_EPOCHS", "1", "TEST.SR_EVAL.ENABLED", "False",
            "OUTPUT_DIR", str(out), "SEED", str(seed), "MODEL.DEVICE", "cpu",
        ]  # fmt: skip
        return setup_cfg(str(quick), opts)

    class StopAfter(HookBase):
        def __init__(self, iteration):
            self.iteration = iteration

        def after_step(self):
            if self.trainer.iter == self.iteration:
                raise _Stop()

    def trainer_for(out, seed, stop_after=None):
        torch.manual_seed(0)  # the same initial weights (train_net.py seeds through default_setup)
        trainer = SDCoNetTrainer(cfg_for(out, seed))
        if stop_after is not None:
            trainer.register_hooks([StopAfter(stop_after)])  # after the checkpointer: the checkpoint exists
        return trainer

    # A run with a random seed (SEED -1), stopped after 6 of 9 iterations (the SR branch joined at iteration 3),
    # with a periodic evaluation in between, then resumed as `train_net.py --resume` does.
    stopped = trainer_for(tmp_path / "run", -1, stop_after=5)
    stopped.resume_or_load(resume=False)
    assert stopped.cfg.SOLVER.MAX_ITER == 9 and stopped.cfg.SOLVER.SR_START_ITER == 3
    with pytest.raises(_Stop):
        stopped.train()
    seed = stopped.run_seed
    best_at_stop = json.loads(
        (tmp_path / "run" / "model_best.json").read_text()
    )  # evaluated at iterations 2, 5
    resumed = trainer_for(tmp_path / "run", -1)
    seen = {}

    class BestAtStart(HookBase):
        def before_train(self):  # runs after the BestCheckpointer's before_train
            (best,) = [h for h in self.trainer._hooks if type(h).__name__ == "BestCheckpointer"]
            seen["best"] = (best.best_metric, best.best_iter)

    resumed.register_hooks([BestAtStart()])
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 6
    resumed.train()
    assert seen["best"] == (
        best_at_stop["value"],
        best_at_stop["iteration"],
    )  # the best score survived the resume
    from sdconet.d2.hooks import ResumeStateHook

    (hook,) = [h for h in resumed._hooks if isinstance(h, ResumeStateHook)]
    assert hook.seed == seed  # the drawn seed came back from the checkpoint
    # The uninterrupted run with that seed.
    full = trainer_for(tmp_path / "full", seed)
    full.resume_or_load(resume=False)
    full.train()
    a, b = full.model.state_dict(), resumed.model.state_dict()
    diff = [k for k in a if not torch.equal(a[k], b[k])]
    assert not diff, f"{len(diff)} of {len(a)} tensors differ, e.g. {diff[:3]}"
    best = [json.loads((tmp_path / run / "model_best.json").read_text()) for run in ("full", "run")]
    assert best[0] == best[1]  # the same best checkpoint (metric, value, iteration) as the uninterrupted run
    at_stop = torch.load(tmp_path / "run" / "model_0000005.pth", weights_only=True)["model"]
    assert any(
        not torch.equal(at_stop[k], b[k]) for k in b if k.startswith("core.sr_decoder")
    )  # SR kept training
