"""Epoch <-> iteration arithmetic (sdconet.engine.schedule); no detectron2 needed."""

import pytest

from sdconet.engine import EpochSchedule, epoch_of_iter, epochs_to_iters, iters_per_epoch


@pytest.mark.parametrize(
    "n, bs, expected",
    [(10, 2, 5), (11, 2, 6), (1, 16, 1), (3631, 2, 1816), (11828, 16, 740)],
)
def test_iters_per_epoch_is_ceil(n, bs, expected):
    assert iters_per_epoch(n, bs) == expected


@pytest.mark.parametrize("n, bs", [(0, 2), (5, 0), (-1, 2)])
def test_iters_per_epoch_rejects_bad_input(n, bs):
    with pytest.raises(ValueError):
        iters_per_epoch(n, bs)


def test_epoch_of_iter_boundaries():
    ipe = 7
    assert [epoch_of_iter(i, ipe) for i in (0, 6, 7, 13, 14)] == [0, 0, 1, 1, 2]
    # the first iteration of epoch e is e * ipe
    for e in range(5):
        assert epoch_of_iter(epochs_to_iters(e, ipe), ipe) == e
        if e:
            assert epoch_of_iter(epochs_to_iters(e, ipe) - 1, ipe) == e - 1


def test_paper_nwpu_recipe():
    # 36 epochs, LR drop at 11, SR from epoch 16, batch 2 on a 2,905-tile train split
    s = EpochSchedule.from_epochs(
        num_images=2905, ims_per_batch=2, max_epochs=36, steps_epochs=(11,), sr_start_epoch=16
    )
    assert s.iters_per_epoch == 1453
    assert s.max_iter == 36 * 1453
    assert s.steps == (11 * 1453,)
    assert s.sr_start_iter == 16 * 1453
    assert s.eval_period == s.checkpoint_period == 1453


def test_milestones_beyond_the_run_are_dropped_and_periods():
    s = EpochSchedule.from_epochs(
        num_images=9,
        ims_per_batch=2,
        max_epochs=4,
        steps_epochs=(2, 4, 6),
        sr_start_epoch=2,
        eval_period_epochs=0,
        checkpoint_period_epochs=0.5,
    )
    assert s.iters_per_epoch == 5
    assert s.max_iter == 20
    assert s.steps == (10,)
    assert s.sr_start_iter == 10
    assert s.eval_period == 0  # only at the end
    assert s.checkpoint_period == 2  # round(2.5) -> banker's rounding gives 2, still >= 1


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(max_epochs=0),
        dict(max_epochs=4, steps_epochs=(3, 2)),
        dict(max_epochs=4, checkpoint_period_epochs=0),
        dict(max_epochs=4, eval_period_epochs=-1),
        dict(max_epochs=4, sr_start_epoch=-1),
    ],
)
def test_schedule_rejects_bad_recipes(kwargs):
    with pytest.raises(ValueError):
        EpochSchedule.from_epochs(num_images=10, ims_per_batch=2, **kwargs)


def test_scale_recipe_keeps_the_fractions_of_the_paper_recipe():
    from sdconet.engine.schedule import scale_recipe

    r = scale_recipe(max_epochs=52, steps_epochs=(27,), sr_start_epoch=16, budget_epochs=3)
    assert r.max_epochs == 3 and r.scale == pytest.approx(3 / 52)
    assert r.sr_start_epoch == pytest.approx(16 * 3 / 52) and r.steps_epochs == pytest.approx((27 * 3 / 52,))
    # NWPU VHR-10-Split train (2531 tiles), batch 4: SR from iteration 584 of 1899, LR step at 986
    s = EpochSchedule.from_epochs(
        num_images=2531, ims_per_batch=4, max_epochs=r.max_epochs, steps_epochs=r.steps_epochs,
        sr_start_epoch=r.sr_start_epoch,
    )  # fmt: skip
    assert (s.max_iter, s.steps, s.sr_start_iter) == (1899, (986,), 584)
    assert 0 < s.sr_start_iter < s.steps[0] < s.max_iter  # the SR branch trains in a short run
    with pytest.raises(ValueError, match="budget_epochs"):
        scale_recipe(max_epochs=52, steps_epochs=(), sr_start_epoch=16, budget_epochs=0)
