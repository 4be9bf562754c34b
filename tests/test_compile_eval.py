"""The eval forward compiles: no host synchronisation, no graph break, compiled == eager (CPU).

* zero host-synchronising ATen ops (``aten._local_scalar_dense`` & co, counted by a ``TorchDispatchMode``, plus
  ``Tensor.tolist``) in the eval forward of every variant, extras included;
* ``torch._dynamo.explain(model)(x).graph_break_count == 0`` for every variant of the tiny config at two sizes,
  and for the full-size default model at 256²;
* ``torch.compile(model.forward_padded, backend="aot_eager", fullgraph=True)`` equals eager;
* value checks still protect the eager ``model(lr)`` call and are skipped under compilation.

The dynamo traces are slow (seconds each), so they run in two worker processes while the rest of the file runs.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import compile_workers as cw
import pytest
import torch

from sdconet.evaluation.graph_audit import count_host_syncs


@pytest.fixture(scope="module", autouse=True)
def jobs():
    """Futures of every dynamo job, submitted at once (slowest first) to two worker processes."""
    pool = ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn"))
    futures = {("explain", "full", "256"): pool.submit(cw.explain_job, "full", "256")}
    for variant in ("sdconet_joint", "serial"):
        futures[("compile", variant, "")] = pool.submit(cw.compile_job, variant)
    for variant in cw.VARIANTS:
        for size in cw.SIZES:
            futures[("explain", variant, size)] = pool.submit(cw.explain_job, variant, size)
    yield futures
    pool.shutdown(cancel_futures=True)


@pytest.fixture(scope="module")
def tiny_models():
    return {name: cw.build(name) for name in cw.VARIANTS}


# --------------------------------------------------------------------------------------------- host syncs
@pytest.mark.parametrize("variant", list(cw.VARIANTS))
def test_eval_forward_has_no_host_sync(tiny_models, variant):
    model = tiny_models[variant]
    images, mask = cw.inputs("b2_62x90_padded")
    with torch.no_grad():
        counts, out = count_host_syncs(model, images, mask, check_values=False)
        assert counts == {}, f"{variant}: host syncs in the eval forward: {counts}"
        assert len(out) == 2 and out[0]["boxes"].shape == (model.topk_test, 4)
        extras = dict(return_sr=model.has_sr, return_saliency=True, return_kept=True)
        counts, padded = count_host_syncs(model.forward_padded, images, mask, check_values=False, **extras)
        assert counts == {}, f"{variant}: host syncs in forward_padded with extras: {counts}"
    assert ("sr" in padded) == model.has_sr


def test_sync_counter_sees_value_checks_and_crops(tiny_models):
    """The counter is not blind: value checks and host-side crops of extras are counted."""
    model = tiny_models["sdconet_joint"]
    images, mask = cw.inputs("b2_62x90_padded")
    with torch.no_grad():
        counts, _ = count_host_syncs(model, images, mask)  # check_values defaults to True in eager mode
        assert counts.get("aten._local_scalar_dense", 0) >= 2
        counts, _ = count_host_syncs(model, images, mask, check_values=False, return_saliency=True)
        assert counts.get("Tensor.tolist", 0) >= 1  # cropping on the host reads the valid sizes


def test_value_checks_eager_and_host_boundary(tiny_models):
    model = tiny_models["dino"]
    images, mask = cw.inputs("b2_62x90_padded")
    bad = images.clone()
    bad[1, 0, 5, 5] = float("inf")
    with torch.no_grad():
        with pytest.raises(ValueError, match="NaN or Inf"):
            model(bad, mask)
        with pytest.raises(ValueError, match="top-left"):
            model(images, ~mask)
        model(bad, mask, check_values=False)  # the caller checked on the host: no check, no error
        model.check_values = False
        try:
            model(bad, mask)
        finally:
            model.check_values = True
        with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):  # static checks always run
            model(images[:, :2], mask, check_values=False)


# ------------------------------------------------------------------------------------------- graph breaks
@pytest.mark.parametrize("size", list(cw.SIZES))
@pytest.mark.parametrize("variant", list(cw.VARIANTS))
def test_no_graph_breaks_tiny(jobs, variant, size):
    count, reasons = jobs[("explain", variant, size)].result(timeout=900)
    assert count == 0, f"{variant} at {size}: {count} graph breaks: {reasons}"


def test_no_graph_breaks_full_size_default_model(jobs):
    count, reasons = jobs[("explain", "full", "256")].result(timeout=900)
    assert count == 0, f"default SDCoNet at 256x256: {count} graph breaks: {reasons}"


# ------------------------------------------------------------------------------------ compiled == eager
@pytest.mark.parametrize("variant", ["sdconet_joint", "serial"])
def test_aot_eager_fullgraph_equals_eager(jobs, variant):
    d = jobs[("compile", variant, "")].result(timeout=900)
    assert d["keys_equal"] == 1.0
    assert d["boxes"] <= 1e-4 and d["per_image_boxes"] <= 1e-4, d
    assert d["label_mismatches"] == 0 and d["kept_mismatches"] == 0, d
    assert d["scores"] <= 1e-5 and d["saliency"] <= 1e-5 and d["sr"] <= 1e-4, d
    assert d["per_image_extras_equal"] == 1.0, d
