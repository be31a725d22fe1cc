"""fsae.losses.ppc against hand computations: scores, pseudo-labels, prototypes, the three contrast terms."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fsae.losses.ppc import (
    class_prototypes,
    cross_pseudo_label_contrast,
    cross_view_prototype_contrast,
    intra_view_contrast,
    ppc_contrast_loss,
    ppc_contrast_terms,
    ppc_pseudo_labels,
    ppc_scores,
    prototype_contrast,
)

EPS = 1e-5


def _pixels(*vectors: list[float]) -> torch.Tensor:
    """Embeddings ``(1, D, 1, n)`` holding the given pixel vectors left to right."""
    return torch.tensor(vectors, dtype=torch.float32).t()[None, :, None, :].contiguous()


def test_ppc_scores_hand():
    cams = torch.tensor([[[[9.0, -3.0, 2.0]], [[1.0, 3.0, 5.0]]]], requires_grad=True)  # (1, 2, 1, 3)
    clamped = ppc_scores(cams, bg_threshold=0.1, form="clamped")
    assert not clamped.requires_grad
    torch.testing.assert_close(clamped[0, 0, 0], torch.full((3,), 0.1))  # background: the constant
    torch.testing.assert_close(clamped[0, 1, 0], torch.tensor([0.0, 2 - EPS, 4 - EPS]) / (4 + EPS))
    # the authors' form: the minimum pixel is zeroed first, then shifted below 0: -(1 + eps) / (4 + eps)
    original = ppc_scores(cams, bg_threshold=0.1)
    torch.testing.assert_close(original[0, 1, 0], torch.tensor([-1 - EPS, 2 - EPS, 4 - EPS]) / (4 + EPS))


def test_ppc_scores_empty_map_original_minus_one_clamped_zero():
    cams = torch.zeros(2, 3, 2, 2)
    cams[0, 1] = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    cams[1, 2] = -1.0  # relu -> an empty map
    original, clamped = ppc_scores(cams, form="original"), ppc_scores(cams, form="clamped")
    torch.testing.assert_close(original[1, 2], torch.full((2, 2), -1.0))  # (0 - 0 - eps) / (0 + eps)
    torch.testing.assert_close(original[0, 2], torch.full((2, 2), -1.0))
    assert torch.equal(clamped[1, 2], torch.zeros(2, 2))
    with pytest.raises(ValueError, match="form"):
        ppc_scores(cams, form="minmax")


def test_class_prototypes_topk_selection_on_an_empty_map_is_the_mean_of_tied_pixels():
    embeddings = torch.randn(2, 4, 3, 3)
    scores = torch.full((2, 2, 3, 3), -1.0)  # channel 1 empty everywhere: every pixel ties at -1
    scores[:, 0] = 0.1
    protos = class_prototypes(embeddings, scores, top_k=4, selection="topk")
    table = scores.transpose(0, 1).reshape(2, -1)
    _, index = torch.topk(table, k=4, dim=-1)  # the pixels torch.topk picks on this device
    pixels = embeddings.permute(0, 2, 3, 1).reshape(-1, 4)
    expected = torch.nn.functional.normalize(pixels[index[1]].mean(dim=0), dim=0)
    torch.testing.assert_close(protos[1], expected)
    # stable selection: weights sum to -4, not > 0 -> the zero prototype
    assert torch.equal(class_prototypes(embeddings, scores, top_k=4)[1], torch.zeros(4))


def test_ppc_pseudo_labels_hand():
    scores = torch.tensor([[[[0.1, 0.1, 0.1]], [[0.05, 0.5, 0.9]], [[0.3, 0.6, 0.2]]]])  # (1, 3, 1, 3)
    only_first = ppc_pseudo_labels(scores, torch.tensor([[1.0, 0.0]]))
    assert only_first.dtype == torch.int64
    assert only_first.tolist() == [[[0, 1, 1]]]  # .05 < background .1; absent class 2 scores 0
    assert ppc_pseudo_labels(scores, torch.tensor([[1.0, 1.0]])).tolist() == [[[2, 2, 1]]]


def test_class_prototypes_hand():
    # B=2, D=2, 1x2 maps; flat pixel order (b0,p0), (b0,p1), (b1,p0), (b1,p1)
    embeddings = torch.tensor(
        [[[[0.0, 3.0]], [[1.0, 3.0]]], [[[4.0, 5.0]], [[0.0, 5.0]]]], requires_grad=True
    )  # pixels [0,1], [3,3], [4,0], [5,5]
    scores = torch.zeros(2, 3, 1, 2)
    scores[:, 0] = 0.1  # constant background: every pixel ties
    scores[0, 1, 0] = torch.tensor([0.5, 0.0])
    scores[1, 1, 0] = torch.tensor([1.0, 0.25])
    protos = class_prototypes(embeddings, scores, top_k=2)
    assert protos.shape == (3, 2) and protos.dtype == torch.float32 and not protos.requires_grad
    # background: ties -> the first two flat pixels, equal weights: mean([0,1], [3,3]) = [1.5, 2] -> [.6, .8]
    torch.testing.assert_close(protos[0], torch.tensor([0.6, 0.8]))
    # class 1: top-2 = (b1,p0) w 1.0 [4,0] and (b0,p0) w .5 [0,1] -> [4, .5] / 1.5 -> [8, 1] / sqrt(65)
    # (normalising the embeddings first would give [2, 1] / sqrt(5))
    torch.testing.assert_close(protos[1], torch.tensor([8.0, 1.0]) / math.sqrt(65))
    torch.testing.assert_close(protos[2], torch.zeros(2))  # all weights 0: zero vector, not NaN
    # top_k larger than B*h*w: every pixel; class 1 -> [4,0] + .5 [0,1] + .25 [5,5] = [5.25, 1.75] ~ [3, 1]
    every = class_prototypes(embeddings, scores, top_k=10)
    torch.testing.assert_close(every[1], torch.tensor([3.0, 1.0]) / math.sqrt(10))
    torch.testing.assert_close(every[0], torch.tensor([0.8, 0.6]))


LOG_BIG = math.log1p(math.exp(10.0))  # -log(e^0 / (e^0 + e^10))
LOG_SMALL = math.log1p(math.exp(-10.0))  # -log(e^10 / (e^10 + e^0))


def test_prototype_contrast_hand():
    protos = torch.eye(2)
    f = _pixels([2.0, 0.0])  # normalised to [1, 0]
    assert prototype_contrast(f, protos, torch.tensor([[[0]]])).item() == pytest.approx(LOG_SMALL, abs=1e-6)
    assert prototype_contrast(f, protos, torch.tensor([[[1]]])).item() == pytest.approx(LOG_BIG, rel=1e-6)
    assert prototype_contrast(f, protos, torch.tensor([[[0]]]), temperature=1.0).item() == pytest.approx(
        math.log1p(math.exp(-1.0)), rel=1e-6
    )


def test_cross_terms_wiring_hand():
    f1, f2 = _pixels([1.0, 0.0]), _pixels([0.0, 1.0])
    p1 = torch.eye(2)
    p2 = torch.eye(2).flip(0)  # swapped
    y1 = y2 = torch.tensor([[[0]]])
    # cross-view prototype: f1.P2 = [0,1] target 0 -> big; f2.P1 = [0,1] target 0 -> big
    assert cross_view_prototype_contrast(f1, f2, p1, p2, y1, y2).item() == pytest.approx(LOG_BIG, rel=1e-6)
    # cross pseudo-label: f1.P1 = [1,0] with y2 = 0 -> small; f2.P2 = [1,0] with y1 = 0 -> small
    assert cross_pseudo_label_contrast(f1, f2, p1, p2, y1, y2).item() == pytest.approx(LOG_SMALL, abs=1e-6)
    # the pseudo-labels cross too: y2 = 1 makes the f1 direction big
    y2 = torch.tensor([[[1]]])
    mixed = cross_pseudo_label_contrast(f1, f2, p1, p2, y1, y2).item()
    assert mixed == pytest.approx((LOG_BIG + LOG_SMALL) / 2, rel=1e-6)


def _replayed_draw(size: int, seed: int) -> torch.Tensor:
    return torch.randperm(size, generator=torch.Generator().manual_seed(seed))[: size // 2]


def test_intra_view_contrast_hand():
    protos = torch.eye(4)
    # A (class 0): sims [.8,.6,0,0] -> ranks 1,2 = classes 1, 2 -> l_A = log(1 + e^-2 + e^-8)
    # B (class 0): sims [.6,.8,0,0] -> ranks 1,2 = classes 0 (its own positive!), 2 -> l_B = log(2 + e^-6)
    # C (class 3): alone -> contributes 0 but counts as a present class
    f = _pixels([0.8, 0.6, 0.0, 0.0], [0.6, 0.8, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]).requires_grad_()
    y = torch.tensor([[[0, 0, 3]]])
    l_a, l_b = math.log(1 + math.exp(-2) + math.exp(-8)), math.log(2 + math.exp(-6))
    outcomes = set()
    for seed in range(8):
        loss = intra_view_contrast(
            f, protos, y, num_hard_negatives=2, hard_negative_skip=1, generator=torch.Generator().manual_seed(seed)
        )
        # class 0, L = 2: one random anchor + the semi-hard one (lowest similarity: B); divided by 2 classes
        drawn = [l_a, l_b][_replayed_draw(2, seed).item()]
        assert loss.item() == pytest.approx((drawn + l_b) / 2 / 2, rel=1e-6)
        outcomes.add(round(loss.item(), 6))
    assert len(outcomes) == 2  # the random anchor does vary with the generator
    loss.backward()
    assert f.grad[0, :, 0, :2].abs().sum() > 0
    assert f.grad[0, :, 0, 2].abs().sum() == 0  # the lone pixel is no anchor


def test_intra_view_contrast_semi_hard_anchors_skip_the_hardest():
    # one class, L = 10 pixels at angles 0..36 degrees from the positive prototype: similarity falls with index.
    # K = 2, skip 1, 1 negative: l_i = log(1 + exp((sin - cos) / T)).
    angles = torch.deg2rad(torch.arange(10.0) * 4)
    f = _pixels(*torch.stack([angles.cos(), angles.sin()], dim=1).tolist())
    y = torch.zeros(1, 1, 10, dtype=torch.int64)
    per_pixel = torch.log1p(torch.exp((angles.sin() - angles.cos()) / 0.1))
    loss = intra_view_contrast(
        f, torch.eye(2), y, num_hard_negatives=1, hard_negative_skip=1, generator=torch.Generator().manual_seed(3)
    )
    # semi-hard: ascending similarity = indices 9, 8, ..., 0; ranks int(.6 * 10) - 5 .. 5 = 1..5 -> 8, 7, 6, 5, 4
    anchors = torch.cat([_replayed_draw(10, 3), torch.tensor([8, 7, 6, 5, 4])])
    assert loss.item() == pytest.approx(per_pixel[anchors].mean().item(), rel=1e-5)


def test_intra_view_contrast_without_negatives_is_zero():
    f = torch.randn(1, 3, 2, 2, requires_grad=True)
    y = torch.tensor([[[0, 1], [1, 2]]])
    loss = intra_view_contrast(f, torch.eye(3), y, hard_negative_skip=3)
    assert loss.item() == 0.0 and loss.requires_grad


def _two_views(batch: int = 2, classes: int = 3, dim: int = 5):
    cam1 = torch.randn(batch, classes + 1, 8, 8, requires_grad=True)
    cam2 = torch.randn(batch, classes + 1, 4, 4, requires_grad=True)
    emb1 = torch.rand(batch, dim, 8, 8, requires_grad=True)
    emb2 = torch.rand(batch, dim, 4, 4, requires_grad=True)
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])[:batch]
    return cam1, cam2, emb1, emb2, labels


def test_ppc_contrast_terms_shapes_gradients_and_sum():
    cam1, cam2, emb1, emb2, labels = _two_views()
    terms = ppc_contrast_terms(cam1, cam2, emb1, emb2, labels, generator=torch.Generator().manual_seed(0))
    assert set(terms) == {"cross_prototype", "cross_pseudo_label", "intra_view"}
    for value in terms.values():
        assert value.shape == () and value.dtype == torch.float32 and torch.isfinite(value)
    total = ppc_contrast_loss(cam1, cam2, emb1, emb2, labels, generator=torch.Generator().manual_seed(0))
    assert total.item() == pytest.approx(sum(v.item() for v in terms.values()), rel=1e-6)
    total.backward()
    assert emb1.grad.abs().sum() > 0 and emb2.grad.abs().sum() > 0  # through the resizing of view 1 too
    assert cam1.grad is None and cam2.grad is None  # CAMs only pick labels and prototypes
    double = ppc_contrast_terms(cam1, cam2, emb1, emb2, labels, weight=0.2, generator=torch.Generator().manual_seed(0))
    for key, value in terms.items():
        assert double[key].item() == pytest.approx(2 * value.item(), rel=1e-6)
    as_double = ppc_contrast_loss(*(t.detach().double() for t in (cam1, cam2, emb1, emb2)), labels)
    assert as_double.dtype == torch.float64


def test_ppc_contrast_terms_identical_views_reduce_to_plain_contrast():
    _, cam, _, emb, labels = _two_views()
    terms = ppc_contrast_terms(cam, cam, emb, emb, labels, weight=0.1, top_k=3)
    scores = ppc_scores(cam, 0.1)
    protos = class_prototypes(emb, scores, top_k=3, selection="topk")  # the default score_form="original"
    plain = 0.1 * prototype_contrast(emb, protos, ppc_pseudo_labels(scores, labels))
    assert terms["cross_prototype"].item() == pytest.approx(plain.item(), rel=1e-6)
    assert terms["cross_pseudo_label"].item() == pytest.approx(plain.item(), rel=1e-6)


def test_ppc_contrast_terms_background_prototype_modes():
    cam1, cam2, emb1, emb2, labels = _two_views()
    threshold = ppc_contrast_terms(cam1, cam2, emb1, emb2, labels)["cross_prototype"]
    complement = ppc_contrast_terms(cam1, cam2, emb1, emb2, labels, bg_prototype="complement")["cross_prototype"]
    assert torch.isfinite(complement) and complement.item() != pytest.approx(threshold.item())
    with pytest.raises(ValueError, match="bg_prototype"):
        ppc_contrast_terms(cam1, cam2, emb1, emb2, labels, bg_prototype="mean")
    with pytest.raises(ValueError, match="embeddings2"):
        ppc_contrast_terms(cam1, cam2, emb1, F.interpolate(emb2, size=(2, 2)), labels)
