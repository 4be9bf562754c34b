"""The SR target batch shared by the SDCoNet meta-architecture and the SR branch of stock detectors."""

import pytest
import torch

pytest.importorskip("detectron2")

from sdconet.d2.hr_targets import stack_hr_targets  # noqa: E402


def _normalise(img):
    return img.float() / 255.0


def test_hr_tiles_sit_top_left_on_the_padded_canvas_with_their_mask():
    a = torch.full((3, 8, 6), 255, dtype=torch.uint8)  # LR 4x3 at scale 2
    b = torch.full((3, 10, 10), 51, dtype=torch.uint8)  # LR 5x5
    hr, valid = stack_hr_targets(
        [{"hr_image": a}, {"hr_image": b}], [(4, 3), (5, 5)], 2, (2, 3, 10, 10), torch.device("cpu"), _normalise, "M",
        "hint",
    )
    assert hr.shape == (2, 3, 10, 10) and valid.shape == (2, 1, 10, 10)
    assert torch.all(hr[0, :, :8, :6] == 1.0) and hr[0, :, 8:].abs().sum() == 0 and hr[0, :, :, 6:].abs().sum() == 0
    assert torch.allclose(hr[1], torch.full((3, 10, 10), 0.2))
    assert valid[0].sum() == 8 * 6 and valid[1].sum() == 100
    assert valid[0, 0, 7, 5] == 1 and valid[0, 0, 8, 0] == 0 and valid[0, 0, 0, 6] == 0


def test_missing_or_misfit_hr_image_names_the_file_and_the_hint():
    canvas, cpu = (1, 3, 8, 8), torch.device("cpu")
    with pytest.raises(ValueError, match=r"M: 'tile_7.png' has no 'hr_image'.*\(use LR_MODE degrade\)"):
        stack_hr_targets([{"file_name": "tile_7.png"}], [(4, 4)], 2, canvas, cpu, _normalise, "M", "use LR_MODE degrade")
    wrong = {"file_name": "tile_8.png", "hr_image": torch.zeros((3, 6, 8), dtype=torch.uint8)}
    with pytest.raises(ValueError, match=r"'tile_8.png' hr_image is \(6, 8\), expected 2 x the LR input \(4, 4\)"):
        stack_hr_targets([wrong], [(4, 4)], 2, canvas, cpu, _normalise, "M", "hint")
