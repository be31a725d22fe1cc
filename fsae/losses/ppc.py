"""PPC pixel-to-prototype contrast (Du et al., CVPR 2022; docs/method.md §4, ``L_nce``).

Reconstructed from the authors' ``get_contrast_loss``; pure tensor functions.
Project convention: CAMs ``(B, C+1, h, w)`` with channel 0 = background (PPC
put it last), ``labels`` ``(B, C)`` multi-hot, pixel embeddings ``(B, D, h, w)``
(PPC: ReLU of a 1x1 projection of conv6, D = 128).

PPC has two views: view 1 = the crop, view 2 = the crop resized to 128x128;
every map of view 1 is first resized to view 2's size (16x16 at output
stride 8), so that the two views are pixel-aligned.  Per step, for each view v:

1. scores ``S_v`` (:func:`ppc_scores`): the refined CAM's foreground maps
   max-normed (min-max, no labels), background channel = the constant
   ``bg_threshold`` (0.1 in the PPC training script), all without gradient;
2. pseudo-labels ``y_v`` (:func:`ppc_pseudo_labels`): argmax of ``S_v`` with
   absent classes zeroed;
3. prototypes ``P_v`` (:func:`class_prototypes`): per channel, the score-weighted
   mean of the embeddings of the ``top_k`` highest-scoring pixels of the whole
   batch (``h * w // 16`` = 16 at 16x16), L2-normalised, without gradient;
4. embeddings ``f_v``: L2-normalised per pixel (with gradient).

The three terms (each averaged over the two directions, each weighted by
``weight`` = 0.1, temperature 0.1), see :func:`ppc_contrast_terms`:

* cross-view prototype contrast: ``f_1`` against ``P_2`` with labels ``y_1``, and
  ``f_2`` against ``P_1`` with ``y_2`` (own labels, other view's prototypes);
* cross pseudo-label contrast: ``f_1`` against ``P_1`` with ``y_2``, and ``f_2``
  against ``P_2`` with ``y_1`` (own prototypes, other view's labels);
* intra-view contrast with hard negatives and hard anchors: ``f_v`` against
  ``P_v`` with ``y_v`` (:func:`intra_view_contrast`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fsae.ops import cam_normalize, checks
from fsae.ops.reference import accumulate_dtype

__all__ = [
    "class_prototypes",
    "cross_pseudo_label_contrast",
    "cross_view_prototype_contrast",
    "intra_view_contrast",
    "ppc_contrast_loss",
    "ppc_contrast_terms",
    "ppc_pseudo_labels",
    "ppc_scores",
    "prototype_contrast",
]

BG_PROTOTYPE_MODES = ("threshold", "complement")
SCORE_FORMS = ("original", "clamped")
PROTOTYPE_SELECTIONS = ("stable", "topk")


def _flat(t: torch.Tensor) -> torch.Tensor:
    """``(B, D, h, w)`` -> ``(B*h*w, D)`` (pixel order: batch, row, column)."""
    return t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])


def _normalized_pixels(embeddings: torch.Tensor) -> torch.Tensor:
    """``(B, D, h, w)`` -> ``(B*h*w, D)`` L2-normalised per pixel, in float32 (float64 for float64)."""
    return F.normalize(_flat(embeddings.to(accumulate_dtype(embeddings.dtype))), dim=-1)


def _check_pixels(embeddings: torch.Tensor, pseudo_labels: torch.Tensor, prototypes: torch.Tensor) -> None:
    checks.check_rank4("embeddings", embeddings, "(B, D, h, w)")
    batch, dim, height, width = embeddings.shape
    if tuple(pseudo_labels.shape) != (batch, height, width) or pseudo_labels.dtype != torch.int64:
        raise ValueError(
            f"pseudo_labels must be int64 of shape {(batch, height, width)}, "
            f"got {pseudo_labels.dtype} {tuple(pseudo_labels.shape)}"
        )
    if prototypes.dim() != 2 or prototypes.shape[1] != dim:
        raise ValueError(f"prototypes must be (K, {dim}), got {tuple(prototypes.shape)}")


def ppc_scores(cams: torch.Tensor, bg_threshold: float = 0.1, form: str = "original") -> torch.Tensor:
    """PPC's per-pixel class scores, used for pseudo-labels and prototypes.

    Channel 0 (background) = ``bg_threshold``; channels 1..C = the foreground maps of ``cams`` min-max normalised
    per (image, class), labels *not* applied (absent classes still get prototypes).  No gradient.  With
    ``x = relu(cam)``, ``m`` / ``M`` its map's minimum / maximum:

    * ``form="original"`` (the authors' code): ``x`` is set to 0 where ``x < m + 1e-5``, then
      ``(x - m - 1e-5) / (M - m + 1e-5)``.  The pixels at a map's minimum get a negative score
      ``-(m + 1e-5) / (M - m + 1e-5)``, and a map that is 0 everywhere (a class whose refined map is empty over an
      image, as most real batches have) scores -1 at every pixel: its prototype is then the mean of ``top_k`` tied
      embeddings (:func:`class_prototypes`);
    * ``form="clamped"`` (our correction): :func:`fsae.ops.cam_normalize` ``"minmax"``, i.e. the same values
      clamped at 0; an empty map scores 0 and gets the zero prototype.

    Args:
        cams: ``(B, C+1, h, w)`` (refined) CAMs; channel 0 is ignored.
        bg_threshold: constant background score (0.1 in PPC's training script).
        form: ``"original"`` or ``"clamped"``.

    Returns:
        ``(B, C+1, h, w)`` float32 (float64 for float64 input), detached.
    """
    checks.check_logits("cams", cams)
    checks.check_unit_interval("bg_threshold", bg_threshold)
    checks.check_choice("form", form, SCORE_FORMS)
    with torch.no_grad():
        foreground = cams[:, 1:].detach().to(accumulate_dtype(cams.dtype))
        if form == "clamped":
            foreground = cam_normalize(foreground, mode="minmax")
        else:
            x = foreground.relu()
            low = x.amin(dim=(2, 3), keepdim=True)
            high = x.amax(dim=(2, 3), keepdim=True)
            x = x.masked_fill(x < low + 1e-5, 0.0)
            foreground = (x - low - 1e-5) / (high - low + 1e-5)
        return torch.cat([torch.full_like(foreground[:, :1], bg_threshold), foreground], dim=1)


def ppc_pseudo_labels(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Pixel pseudo-labels: argmax over ``[background, present classes]`` of :func:`ppc_scores`.

    Absent classes score 0.  Ties go to the lowest channel, so the background
    wins a tie with a class (in the original, background last, the class won;
    exact ties between float scores do not occur in practice).  PPC takes the
    argmax of ``softmax(scores * labels)``, which is the same argmax.

    Args:
        scores: ``(B, C+1, h, w)`` from :func:`ppc_scores`.
        labels: ``(B, C)`` multi-hot.

    Returns:
        int64 ``(B, h, w)`` with values in 0..C.
    """
    checks.check_logits("scores", scores)
    checks.check_labels(labels, scores.shape[0], scores.shape[1] - 1, f"scores of shape {tuple(scores.shape)}")
    present = (labels.detach() != 0).to(scores.dtype)
    keep = torch.cat([torch.ones_like(present[:, :1]), present], dim=1)[:, :, None, None]
    return (scores.detach() * keep).argmax(dim=1)


def class_prototypes(
    embeddings: torch.Tensor, scores: torch.Tensor, top_k: int = 16, selection: str = "stable"
) -> torch.Tensor:
    """One prototype per channel from the ``top_k`` best-scoring pixels of the whole batch.

    For channel c: rank all ``B*h*w`` pixels by ``scores[:, c]`` (descending), keep the first
    ``k = min(top_k, B*h*w)``, and take the mean of their *raw* embeddings weighted by their scores
    ``sum_i s_i e_i / sum_i s_i``; the result is L2-normalised.  (The embeddings themselves are not normalised
    before averaging, as in the original.)  No gradient.  Ties among equal scores (the constant background channel;
    an empty class map, :func:`ppc_scores`):

    * ``selection="stable"``: the lowest flat indices ``(b, row, col)`` win, on every device; a channel whose
      selected weights sum to 0 gets the zero vector;
    * ``selection="topk"`` (the authors' code): ``torch.topk`` of the ``(K, B*h*w)`` score table chooses, as it
      does there on the same device; weights are divided by their sum whatever its sign (the ``-1`` scores of an
      empty map give the plain mean of the chosen embeddings).

    Args:
        embeddings: ``(B, D, h, w)`` pixel embeddings.
        scores: ``(B, K, h, w)`` scores (``K = C+1`` from :func:`ppc_scores`).
        top_k: pixels per prototype (PPC: ``h * w // 16`` of the small view = 16).
        selection: ``"stable"`` or ``"topk"``.

    Returns:
        ``(K, D)`` float32 (float64 for float64 embeddings), unit rows (or zero), detached.
    """
    checks.check_rank4("embeddings", embeddings, "(B, D, h, w)")
    checks.check_rank4("scores", scores, "(B, K, h, w)")
    if scores.shape[0] != embeddings.shape[0] or scores.shape[2:] != embeddings.shape[2:]:
        raise ValueError(
            f"scores (B, K, h, w) must match embeddings (B, D, h, w) in B, h, w, "
            f"got {tuple(scores.shape)} and {tuple(embeddings.shape)}"
        )
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be an integer >= 1, got {top_k!r}")
    checks.check_choice("selection", selection, PROTOTYPE_SELECTIONS)
    with torch.no_grad():
        dtype = accumulate_dtype(embeddings.dtype)
        pixels = _flat(embeddings.detach().to(dtype))  # (N, D)
        if selection == "topk":
            # the authors' table: (K, B, h, w) -> (K, B*h*w), the same memory order topk saw there
            table = scores.detach().to(dtype).transpose(0, 1).reshape(scores.shape[1], -1)
            weights, index = torch.topk(table, k=min(top_k, table.shape[1]), dim=-1)
            mean = torch.einsum("kt,ktd->kd", weights, pixels[index]) / weights.sum(dim=1, keepdim=True)
            return F.normalize(mean, dim=-1)
        ranked = _flat(scores.detach().to(dtype)).t()  # (K, N)
        k = min(top_k, ranked.shape[1])
        index = torch.sort(ranked, dim=1, descending=True, stable=True).indices[:, :k]  # (K, k)
        weights = ranked.gather(1, index)  # (K, k)
        weighted_sum = torch.einsum("kt,ktd->kd", weights, pixels[index])
        total = weights.sum(dim=1, keepdim=True)
        mean = torch.where(total > 0, weighted_sum / total.clamp_min(torch.finfo(dtype).tiny), 0.0)
        return F.normalize(mean, dim=-1)


def prototype_contrast(
    embeddings: torch.Tensor, prototypes: torch.Tensor, pseudo_labels: torch.Tensor, temperature: float = 0.1
) -> torch.Tensor:
    """InfoNCE of every pixel against all prototypes, mean over pixels.

    ``-log( exp(f.p_y / T) / sum_c exp(f.p_c / T) )`` with ``f`` the
    L2-normalised embedding, i.e. cross-entropy of the logits ``f P^T / T``
    with target ``y`` (the denominator contains the positive, as in PPC).

    Args:
        embeddings: ``(B, D, h, w)`` (normalised here; gradient flows to them).
        prototypes: ``(K, D)`` unit rows (treated as given; PPC's are detached).
        pseudo_labels: int64 ``(B, h, w)`` in 0..K-1.
        temperature: ``T`` (0.1).

    Returns:
        0-d float32 tensor.
    """
    _check_pixels(embeddings, pseudo_labels, prototypes)
    pixels = _normalized_pixels(embeddings)
    logits = pixels @ prototypes.to(pixels.dtype).t() / temperature
    return F.cross_entropy(logits, pseudo_labels.reshape(-1))


def cross_view_prototype_contrast(
    embeddings1: torch.Tensor,
    embeddings2: torch.Tensor,
    prototypes1: torch.Tensor,
    prototypes2: torch.Tensor,
    pseudo_labels1: torch.Tensor,
    pseudo_labels2: torch.Tensor,
    temperature: float = 0.1,
) -> torch.Tensor:
    """Cross-view prototype contrast (unweighted): each view's pixels, its own
    pseudo-labels, the *other* view's prototypes; mean of the two directions.

    ``(NCE(f_1, P_2, y_1) + NCE(f_2, P_1, y_2)) / 2`` with :func:`prototype_contrast`.
    All inputs at the same spatial size (view 1 resized to view 2's).
    """
    return (
        prototype_contrast(embeddings1, prototypes2, pseudo_labels1, temperature)
        + prototype_contrast(embeddings2, prototypes1, pseudo_labels2, temperature)
    ) / 2


def cross_pseudo_label_contrast(
    embeddings1: torch.Tensor,
    embeddings2: torch.Tensor,
    prototypes1: torch.Tensor,
    prototypes2: torch.Tensor,
    pseudo_labels1: torch.Tensor,
    pseudo_labels2: torch.Tensor,
    temperature: float = 0.1,
) -> torch.Tensor:
    """Cross pseudo-label contrast (unweighted): each view's pixels and prototypes,
    the *other* view's pseudo-labels; mean of the two directions.

    ``(NCE(f_1, P_1, y_2) + NCE(f_2, P_2, y_1)) / 2`` with :func:`prototype_contrast`.
    """
    return (
        prototype_contrast(embeddings1, prototypes1, pseudo_labels2, temperature)
        + prototype_contrast(embeddings2, prototypes2, pseudo_labels1, temperature)
    ) / 2


def _draw_anchors(label: int, size: int, half: int, generator: torch.Generator | None) -> torch.Tensor:
    """``half`` distinct random positions in ``range(size)`` among class ``label``'s pixels (int64, on the
    generator's device).  One function, so that the fidelity tests can replay the authors' draws."""
    device = generator.device if generator is not None else torch.device("cpu")
    return torch.randperm(size, generator=generator, device=device)[:half]


def intra_view_contrast(
    embeddings: torch.Tensor,
    prototypes: torch.Tensor,
    pseudo_labels: torch.Tensor,
    temperature: float = 0.1,
    num_hard_negatives: int = 10,
    hard_negative_skip: int = 3,
    semi_hard_quantile: float = 0.6,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Intra-view contrast with hard negatives and hard anchors (one view, unweighted).

    Per pixel i with embedding ``f_i`` (L2-normalised), label ``y_i`` and
    similarities ``s_ic = f_i . p_c`` to all K prototypes:

    * hard negatives: the prototypes ranked ``hard_negative_skip`` ..
      ``hard_negative_skip + num_hard_negatives - 1`` by ``s_ic`` (descending,
      chosen without gradient; PPC: ranks 3..12 of ``topk(k=13)``, skipping the
      3 most similar).  The positive's own prototype is not excluded, so it can
      appear again among them, as in PPC.  With fewer prototypes the list is
      cut at K (empty when K <= skip: the pixel's loss is then 0);
    * ``l_i = -log( exp(s_iy/T) / (exp(s_iy/T) + sum_{hard j} exp(s_ij/T)) )``.

    Anchors, per pseudo-label class c present in the view (L pixels):
    ``L // 2`` pixels drawn at random without replacement (``generator``), plus
    ``L // 2`` "semi-hard" pixels: sorted by similarity to their positive
    ascending, ranks ``int(0.6 L) - L // 2`` .. ``int(0.6 L) - 1`` (PPC skips the
    very hardest ~10 %).  The two sets may overlap (duplicates count twice).
    The class loss is the mean of ``l`` over the ``2 * (L // 2)`` anchors.  A
    class with L < 2 contributes 0 but still counts in the divisor: the result
    is the sum of class losses over the number of classes present.

    Args:
        embeddings: ``(B, D, h, w)`` (gradient flows to them).
        prototypes: ``(K, D)`` unit rows (treated as constants).
        pseudo_labels: int64 ``(B, h, w)`` in 0..K-1.
        temperature: ``T`` (0.1).
        num_hard_negatives: negatives per pixel (10).
        hard_negative_skip: most similar prototypes skipped (3).
        semi_hard_quantile: upper similarity quantile of the semi-hard anchors (0.6).
        generator: ``torch.Generator`` for the random anchors (its device is used
            for the draw); None uses the global CPU generator.

    Returns:
        0-d float32 tensor.
    """
    _check_pixels(embeddings, pseudo_labels, prototypes)
    for name, value in (("num_hard_negatives", num_hard_negatives), ("hard_negative_skip", hard_negative_skip)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    checks.check_unit_interval("semi_hard_quantile", semi_hard_quantile)
    if semi_hard_quantile < 0.5:
        raise ValueError(f"semi_hard_quantile must be >= 0.5 (it bounds L // 2 anchors), got {semi_hard_quantile!r}")

    pixels = _normalized_pixels(embeddings)  # (N, D)
    labels = pseudo_labels.reshape(-1)
    num_classes = prototypes.shape[0]
    similarity = pixels @ prototypes.to(pixels.dtype).t()  # (N, K)
    positive = similarity.gather(1, labels[:, None])  # (N, 1)
    stop = min(hard_negative_skip + num_hard_negatives, num_classes)
    if hard_negative_skip < stop:
        with torch.no_grad():
            ranked = torch.sort(similarity.detach(), dim=1, descending=True, stable=True).indices
        negatives = similarity.gather(1, ranked[:, hard_negative_skip:stop])
        logits = torch.cat([positive, negatives], dim=1) / temperature
        per_pixel = torch.logsumexp(logits, dim=1) - positive[:, 0] / temperature
    else:
        per_pixel = positive[:, 0] * 0.0  # only the positive in the denominator: -log(1) = 0

    anchor_order = positive[:, 0].detach()
    counts = torch.bincount(labels, minlength=num_classes).tolist()
    groups = torch.split(torch.sort(labels, stable=True).indices, counts)
    total = per_pixel.new_zeros(())
    present = 0
    for label, members in enumerate(groups):
        size = members.numel()
        if size == 0:
            continue
        present += 1
        if size < 2:
            continue
        half = size // 2
        drawn = _draw_anchors(label, size, half, generator).to(members.device)
        upper = int(size * semi_hard_quantile)
        by_similarity = members[torch.sort(anchor_order[members], stable=True).indices]
        anchors = torch.cat([members[drawn], by_similarity[upper - half : upper]])
        total = total + per_pixel[anchors].mean()
    return total / present


def ppc_contrast_terms(
    cam1: torch.Tensor,
    cam2: torch.Tensor,
    embeddings1: torch.Tensor,
    embeddings2: torch.Tensor,
    labels: torch.Tensor,
    weight: float = 0.1,
    temperature: float = 0.1,
    bg_threshold: float = 0.1,
    top_k: int | None = None,
    num_hard_negatives: int = 10,
    hard_negative_skip: int = 3,
    bg_prototype: str = "threshold",
    generator: torch.Generator | None = None,
    score_form: str = "original",
) -> dict[str, torch.Tensor]:
    """The three weighted PPC terms for a (large view, small view) pair.

    View 1's CAM and embeddings are resized bilinearly (``align_corners=True``)
    to view 2's size ``(h, w)`` (gradient flows through the resizing of the
    embeddings); scores, pseudo-labels and prototypes follow the module
    docstring; each term is ``weight`` times the mean of its two directions.

    Args:
        cam1: ``(B, C+1, H, W)`` refined CAMs of view 1 (PPC passes the PCM output).
        cam2: ``(B, C+1, h, w)`` refined CAMs of view 2.
        embeddings1: ``(B, D, H', W')`` pixel embeddings of view 1 (any size).
        embeddings2: ``(B, D, h, w)`` pixel embeddings of view 2.
        labels: ``(B, C)`` multi-hot.
        weight: ``gamma`` of PPC (0.1 in its training script; the function's default there is 0.05).
        temperature: 0.1.
        bg_threshold: constant background score for pseudo-labels and ranking (0.1).
        top_k: pixels per prototype; None = ``max(1, h * w // 16)`` as in PPC (16 at 16x16).
        num_hard_negatives, hard_negative_skip: see :func:`intra_view_contrast`.
        bg_prototype: how background pixels are ranked for the background
            prototype. ``"threshold"`` (original): by the constant
            ``bg_threshold``, so every pixel ties and the first ``top_k`` pixels
            (image 0, top rows) are averaged; ``"complement"``: by
            ``1 - max_k score_k`` over the present classes (SEAM's background).
        generator: for the random anchors of the intra-view term.
        score_form: ``"original"`` (the authors' code: :func:`ppc_scores` ``form="original"``, prototypes by
            ``torch.topk``) or ``"clamped"`` (our correction: scores clamped at 0, stable prototype selection,
            empty maps give zero prototypes).  The two differ when a class's map is empty over an image.

    Returns:
        ``{"cross_prototype", "cross_pseudo_label", "intra_view"}``: weighted 0-d
        float32 tensors whose sum is :func:`ppc_contrast_loss`.  Only the
        embeddings receive gradient (CAMs, scores, prototypes are constants).
    """
    checks.check_logits("cam1", cam1)
    checks.check_logits("cam2", cam2)
    checks.check_rank4("embeddings1", embeddings1, "(B, D, H, W)")
    checks.check_rank4("embeddings2", embeddings2, "(B, D, h, w)")
    checks.check_choice("bg_prototype", bg_prototype, BG_PROTOTYPE_MODES)
    checks.check_choice("score_form", score_form, SCORE_FORMS)
    batch, channels, height, width = cam2.shape
    if cam1.shape[:2] != cam2.shape[:2]:
        raise ValueError(f"cam1 and cam2 must agree in (B, C+1), got {tuple(cam1.shape)} and {tuple(cam2.shape)}")
    if embeddings2.shape[0] != batch or embeddings2.shape[2:] != cam2.shape[2:]:
        raise ValueError(
            f"embeddings2 must be (B, D, h, w) = ({batch}, D, {height}, {width}), got {tuple(embeddings2.shape)}"
        )
    if embeddings1.shape[:2] != embeddings2.shape[:2]:
        raise ValueError(
            f"embeddings1 and embeddings2 must agree in (B, D), got {tuple(embeddings1.shape)} "
            f"and {tuple(embeddings2.shape)}"
        )
    checks.check_labels(labels, batch, channels - 1, f"cam2 of shape {tuple(cam2.shape)}")

    size = (height, width)
    cam1 = F.interpolate(cam1.detach().to(accumulate_dtype(cam1.dtype)), size=size, mode="bilinear", align_corners=True)
    embeddings1 = F.interpolate(
        embeddings1.to(accumulate_dtype(embeddings1.dtype)), size=size, mode="bilinear", align_corners=True
    )
    k = top_k if top_k is not None else max(1, height * width // 16)

    views = []
    for cam, embeddings in ((cam1, embeddings1), (cam2, embeddings2)):
        scores = ppc_scores(cam, bg_threshold, score_form)
        pseudo = ppc_pseudo_labels(scores, labels)
        if bg_prototype == "complement":
            present = (labels.detach() != 0).to(scores.dtype)[:, :, None, None]
            background = 1 - (scores[:, 1:] * present).amax(dim=1, keepdim=True)
            scores = torch.cat([background, scores[:, 1:]], dim=1)
        selection = "topk" if score_form == "original" else "stable"
        views.append((embeddings, class_prototypes(embeddings, scores, k, selection), pseudo))
    (f1, p1, y1), (f2, p2, y2) = views

    intra = (
        intra_view_contrast(f1, p1, y1, temperature, num_hard_negatives, hard_negative_skip, generator=generator)
        + intra_view_contrast(f2, p2, y2, temperature, num_hard_negatives, hard_negative_skip, generator=generator)
    ) / 2
    return {
        "cross_prototype": weight * cross_view_prototype_contrast(f1, f2, p1, p2, y1, y2, temperature),
        "cross_pseudo_label": weight * cross_pseudo_label_contrast(f1, f2, p1, p2, y1, y2, temperature),
        "intra_view": weight * intra,
    }


def ppc_contrast_loss(
    cam1: torch.Tensor,
    cam2: torch.Tensor,
    embeddings1: torch.Tensor,
    embeddings2: torch.Tensor,
    labels: torch.Tensor,
    weight: float = 0.1,
    temperature: float = 0.1,
    bg_threshold: float = 0.1,
    top_k: int | None = None,
    num_hard_negatives: int = 10,
    hard_negative_skip: int = 3,
    bg_prototype: str = "threshold",
    generator: torch.Generator | None = None,
    score_form: str = "original",
) -> torch.Tensor:
    """``L_nce`` of PPC: the sum of :func:`ppc_contrast_terms` (same arguments), a 0-d float32 tensor."""
    terms = ppc_contrast_terms(
        cam1,
        cam2,
        embeddings1,
        embeddings2,
        labels,
        weight,
        temperature,
        bg_threshold,
        top_k,
        num_hard_negatives,
        hard_negative_skip,
        bg_prototype,
        generator,
        score_form,
    )
    return terms["cross_prototype"] + terms["cross_pseudo_label"] + terms["intra_view"]
