"""bench/body_cutoff.py's crops: each cuts the person off at the end it names, by the share it
names; each tight frame keeps the whole person with the margin it names; the whole render is kept."""

from __future__ import annotations

import numpy as np

from bench.body_cutoff import FEET_CUTS, HEAD_CUTS, MARGINS_PX, crops


def test_crops_cut_the_end_they_name_and_tight_frames_keep_the_person() -> None:
    image = np.zeros((960, 720, 3), np.uint8)
    mask = np.zeros((960, 720), bool)
    mask[100:901, 300:420] = True  # head top at row 100, feet at row 900: 800 px tall
    image[mask] = 255
    got = crops(image, mask)
    assert len(got) == len(HEAD_CUTS) + len(FEET_CUTS) + len(MARGINS_PX) + 1
    assert got["whole"][0] == "" and got["whole"][1] is image
    for share in HEAD_CUTS:
        end, crop = got[f"head {share:.1%}"]
        cut = max(1, int(share * 800))
        assert end == "head" and crop.shape[0] == 960 - 100 - cut
        assert crop[0, 360].all() and crop[:, 360, 0].astype(bool).sum() == 801 - cut  # the feet kept
    for share in FEET_CUTS:
        end, crop = got[f"feet {share:.1%}"]
        assert end == "feet" and crop.shape[0] == 100 + int(share * 800)
        assert crop[-1, 360].all() and np.nonzero(crop[:, 360, 0])[0].min() == 100  # the head kept
    for margin in MARGINS_PX:
        end, crop = got[f"tight {margin} px"]
        assert end == "" and crop.shape[0] == 800 + 1 + 2 * margin
        rows = np.nonzero(crop[:, 360, 0])[0]
        assert rows.min() == margin and rows.max() == crop.shape[0] - 1 - margin
