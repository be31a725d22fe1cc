"""The scales x flips loop shared by multiscale_cams and multiscale_segment (fsae.infer._scales)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fsae.infer._scales import summed_scale_probs


def test_sum_of_passes_channels_mode_and_checks():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.Dropout(0.9)).train()
    image = torch.randn(2, 3, 10, 14)
    seen = []
    total = summed_scale_probs(model, image, (1.0, 0.5), True, lambda logits, inputs: seen.append(inputs.shape))
    assert model.training  # eval mode during the call (dropout off), restored afterwards
    assert seen == [(4, 3, 10, 14), (4, 3, 5, 7)]  # each scale's batch with its mirror, one check per pass
    model.eval()
    expected = 0
    for size in ((10, 14), (5, 7)):
        for flipped in (False, True):
            x = F.interpolate(image, size, mode="bilinear", align_corners=False) if size != (10, 14) else image
            x = x.flip(-1) if flipped else x
            probs = F.interpolate(model(x).softmax(1), (10, 14), mode="bilinear", align_corners=False)
            expected = expected + (probs.flip(-1) if flipped else probs)
    assert total.shape == (2, 4, 10, 14) and total.dtype == torch.float32
    torch.testing.assert_close(total, expected)
    foreground = summed_scale_probs(model, image, (1.0, 0.5), True, lambda *_: None, first_channel=1)
    torch.testing.assert_close(foreground, total[:, 1:])
