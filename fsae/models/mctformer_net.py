"""MCTformer-V2 network (Xu et al., CVPR 2022; docs/method.md §5) over a timm Vision Transformer.

The network is a timm ViT (DeiT-S/16 by default) whose single class token is replaced by ``C`` class tokens, one per
foreground class, with a 3x3 convolution on the patch tokens as a second, dense classifier. Everything else is timm's:
``patch_embed``, ``pos_embed``, ``blocks``, ``norm_pre``, ``pos_drop`` are taken from ``timm.create_model`` (via
:func:`fsae.models.create_backbone`, so ``pretrained=True`` and ``pretrained_path=FILE`` work as for every backbone);
nothing of timm is copied here. Per image of size ``H x W`` (any size of at least one patch; the rows and columns
past the last multiple of 16 are not seen, as the original's strided patch convolution drops them) with
``h, w = H // 16, W // 16``:

* ``token_logits (B, C)``: each class token after the last block, averaged over the embedding dimension
  (``x_cls_logits = x[:, :C].mean(-1)`` in the original);
* ``patch_cam (B, C, h, w)``: the conv head on the patch tokens (raw, before ReLU); ``patch_logits (B, C)`` is its
  global average pool. The two logit vectors are what :func:`fsae.losses.mctformer.mctformer_loss` trains;
* ``attn_maps (B, C, h, w)``: class-to-patch attention, averaged over heads, summed over the last ``attn_layers``
  blocks (``mtatt`` in the original; 3 layers for CAM generation, ``--layer-index 3``);
* ``patch_attn (B, hw, hw)``: patch-to-patch attention, averaged over heads, summed over the last ``refine_layers``
  blocks (all of them by default, as the original);
* ``cams (B, C, h, w)``: MCTformer-V2's inference CAM: ``attn_maps * relu(patch_cam)`` refined by the patch
  attention, ``cams[b, c, i] = sum_j patch_attn[b, i, j] * fused[b, c, j]``.

The attention rows are the softmax over *all* keys (class and patch tokens), then sliced, so class-to-patch rows sum
to less than one per layer, exactly as in the original. timm's ``Attention`` does not return its weights (and runs
fused SDPA), so :func:`block_attention` recomputes them from the block's own ``norm1``, ``attn.qkv``, ``q_norm`` /
``k_norm`` and ``scale``: the same weights, before attention dropout, as the block uses. They are computed only in
the layers and for the query rows that are asked for (``attention="class"``: the class rows of the last
``attn_layers`` blocks, cheap; ``"all"``: every row of every needed block).

Facts taken from the authors' code (``xulianuwa/MCTformer``: ``models.py``, ``main.py``, ``engine.py``):

* no final LayerNorm: ``MCTformerV2.forward_features`` returns the last block's tokens unnormalised; the ViT's
  ``norm`` is replaced by ``nn.Identity`` (``final_norm=True`` keeps it);
* fine-tuning from DeiT (``main.py --finetune https://...deit_small...``) repeats the pretrained class token and its
  position embedding ``C`` times; with no weights loaded the original initialises both with ``trunc_normal(0.02)``;
  this net does the same in each case;
* the conv head keeps PyTorch's default ``Conv2d`` initialisation (the original's ``_init_weights`` only touches
  ``Linear`` and ``LayerNorm``);
* position embeddings of the patches are interpolated bicubically to the input's grid (no antialiasing) as the
  original's ``interpolate_pos_encoding`` does (``pos_resample="authors"``, default): ``scale_factor =
  (grid + 0.1) / 14`` (the output has ``grid`` cells, its source coordinates are those of the factor), left as is
  only for a square image on the 14 x 14 grid (a 224 x 238 image is resampled although its grid is 14 x 14);
  :func:`resample_pos_embed`.

State-dict keys equal the original's (``cls_token (1, C, D)``, ``pos_embed (1, C + N, D)``, ``patch_embed.proj``,
``blocks.{i}.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``, ``head``), so an original MCTformer-V2 checkpoint
loads with :func:`fsae.models.load_pretrained`; its unused ``norm.weight`` / ``norm.bias`` are reported as unexpected.
``python -m fsae.models.import_checkpoint --method mctformer checkpoint.pth RUN_DIR`` makes a run folder of it.

Deviations: the fused map inside ``cams`` is not detached (the original detaches the patch CAM there; no difference
under ``torch.no_grad``). ``pos_resample="exact"`` (a switch, not the default) resamples the position embedding to
the grid size directly (timm's ``resample_abs_pos_embed``): source coordinates differ by the factor
``grid / (grid + 0.1)``; with the fidelity fixture's random DeiT-S weights the fused CAM moves by 3e-4 .. 8e-4 of
its maximum (75 x 100 .. 224 x 238 inputs), the class-token logits by up to 2e-3.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from timm.layers import Attention, resample_abs_pos_embed, trunc_normal_
from timm.models.vision_transformer import Block, VisionTransformer
from torch import nn

from fsae.models.pretrained import create_backbone

__all__ = [
    "ATTENTION_MODES",
    "POS_RESAMPLES",
    "MCTformerOutput",
    "MCTformerV2Net",
    "block_attention",
    "resample_pos_embed",
]

ATTENTION_MODES = ("none", "class", "all")
# How the patch position embeddings reach the input's grid: "authors" = the original's interpolate_pos_encoding
# (bicubic with scale_factor (grid + 0.1) / old_grid; untouched only for a square image on the pretraining grid),
# "exact" = bicubic to the grid size (timm's resample_abs_pos_embed; untouched on the pretraining grid).
POS_RESAMPLES = ("authors", "exact")


def resample_pos_embed(
    pos_embed: torch.Tensor,
    grid: tuple[int, int],
    old_grid: tuple[int, int],
    prefix_tokens: int,
    mode: str = "authors",
    square_image: bool = True,
) -> torch.Tensor:
    """Position embeddings ``(1, prefix + h*w, D)`` for a ``grid = (h, w)`` token grid from ``pos_embed``
    ``(1, prefix + H0*W0, D)`` laid out on ``old_grid = (H0, W0)``; the ``prefix_tokens`` leading ones unchanged.

    ``mode="authors"`` (the original's ``interpolate_pos_encoding``): returned as is when ``grid == old_grid`` and
    the image is square in pixels (``square_image``), else ``F.interpolate(..., scale_factor=((h + 0.1) / H0,
    (w + 0.1) / W0), mode="bicubic")``: the output has ``h x w`` cells but PyTorch maps its coordinates with the
    given factor, so the source points sit at ``(i + 0.5) * H0 / (h + 0.1) - 0.5`` instead of ``... * H0 / h``
    (and a non-square image on the pretraining grid is resampled too). ``mode="exact"``: timm's
    ``resample_abs_pos_embed`` to ``(h, w)`` (bicubic, no antialias; as is when ``grid == old_grid``).
    """
    if mode not in POS_RESAMPLES:
        raise ValueError(f"pos_resample must be one of {POS_RESAMPLES}, got {mode!r}")
    h, w = grid
    old_h, old_w = old_grid
    if mode == "exact":
        return resample_abs_pos_embed(
            pos_embed, new_size=(h, w), old_size=(old_h, old_w), num_prefix_tokens=prefix_tokens, antialias=False
        )
    if (h, w) == (old_h, old_w) and square_image:
        return pos_embed
    dim = pos_embed.shape[-1]
    patches = pos_embed[:, prefix_tokens:].reshape(1, old_h, old_w, dim).permute(0, 3, 1, 2)
    patches = torch.nn.functional.interpolate(
        patches, scale_factor=((h + 0.1) / old_h, (w + 0.1) / old_w), mode="bicubic"
    )
    if tuple(patches.shape[-2:]) != (h, w):  # floor(old * (g + 0.1) / old) = g unless rounding goes wrong
        raise RuntimeError(f"position-embedding interpolation gave {tuple(patches.shape[-2:])}, expected {(h, w)}")
    patches = patches.permute(0, 2, 3, 1).reshape(1, h * w, dim)
    return torch.cat([pos_embed[:, :prefix_tokens], patches], dim=1)


@dataclass
class MCTformerOutput:
    """What :meth:`MCTformerV2Net.forward` returns (see the module docstring for each map).

    Attributes:
        token_logits: ``(B, C)`` class-token logits.
        patch_logits: ``(B, C)`` global average pool of ``patch_cam``.
        patch_cam: ``(B, C, h, w)`` raw conv-head activations on the patch tokens.
        attn_maps: ``(B, C, h, w)`` float32 class-to-patch attention (``attention`` "class" or "all"), else None.
        patch_attn: ``(B, hw, hw)`` float32 patch-to-patch attention (``attention="all"``), else None.
        cams: ``(B, C, h, w)`` float32 refined fused CAMs (``attention="all"``), else None.
    """

    token_logits: torch.Tensor
    patch_logits: torch.Tensor
    patch_cam: torch.Tensor
    attn_maps: torch.Tensor | None = None
    patch_attn: torch.Tensor | None = None
    cams: torch.Tensor | None = None

    @property
    def fused(self) -> torch.Tensor:
        """``attn_maps * relu(patch_cam)``: the unrefined MCTformer-V2 CAM (needs ``attention`` "class" or "all")."""
        if self.attn_maps is None:
            raise ValueError('fused CAMs need the class-to-patch attention: call the net with attention="class"')
        return self.attn_maps * self.patch_cam.float().relu()


def block_attention(block: Block, x: torch.Tensor, queries: int | None = None) -> torch.Tensor:
    """Softmaxed self-attention weights of a timm pre-norm ``Block`` on its input tokens ``x (B, N, D)``.

    Recomputes what ``block.attn`` does inside (``qkv`` on ``norm1(x)``, optional ``q_norm`` / ``k_norm``, the
    ``scale`` of the block), in float32, before attention dropout.

    Args:
        block: a timm ``vision_transformer.Block`` with a standard ``timm.layers.Attention``.
        x: ``(B, N, D)`` the block's input tokens.
        queries: keep only the first ``queries`` query rows (e.g. the class tokens); None keeps all.

    Returns:
        ``(B, heads, Nq, N)`` float32 weights, each row summing to 1 over all ``N`` keys.
    """
    attn = block.attn
    y = block.norm1(x)
    batch, tokens, _ = y.shape
    qkv = attn.qkv(y).reshape(batch, tokens, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k, _ = qkv.unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    if queries is not None:
        q = q[:, :, :queries]
    scores = (q.float() * attn.scale) @ k.float().transpose(-2, -1)
    return scores.softmax(dim=-1)


def _check_vit(vit: nn.Module, name: str) -> None:
    problems = []
    if not isinstance(vit, VisionTransformer):
        problems.append(f"is a {type(vit).__name__}, not a timm VisionTransformer")
    else:
        if vit.cls_token is None:
            problems.append("has no class token (class_token=False)")
        if vit.reg_token is not None:
            problems.append("has register tokens")
        if vit.pos_embed is None or vit.no_embed_class:
            problems.append("has no absolute position embedding covering the class token (pos_embed / no_embed_class)")
        if not isinstance(vit.patch_drop, nn.Identity):
            problems.append("drops patches (patch_drop_rate > 0 breaks the token grid)")
        for i, blk in enumerate(vit.blocks):
            if type(blk) is not Block or type(blk.attn) is not Attention:
                problems.append(f"block {i} is {type(blk).__name__}/{type(getattr(blk, 'attn', None)).__name__}")
                break
            if blk.attn.gate is not None:
                problems.append(f"block {i} uses gated attention")
                break
    if problems:
        raise ValueError(
            f"MCTformer-V2 needs a plain pre-norm ViT/DeiT with one class token and timm's Attention; "
            f"{name!r} {'; '.join(problems)}"
        )


class MCTformerV2Net(nn.Module):
    """MCTformer-V2: a timm ViT with ``num_classes`` class tokens and a 3x3 conv CAM head on the patch tokens.

    Args:
        num_classes: C, foreground classes (one class token each).
        backbone: timm ViT name (``"deit_small_patch16_224"`` as the paper; ``"deit_tiny_patch16_224"`` with
            ``depth=2, img_size=64`` for tests).
        pretrained: timm's published weights for ``backbone`` (needs internet or timm's cache).
        pretrained_path: local ViT state dict (timm key names, e.g. DeiT's ``deit_small_patch16_224-cd65a155.pth``).
            With weights, the C class tokens and their position embeddings start as copies of the pretrained ones.
        attn_layers: class-to-patch attention summed over this many last blocks (3, as the original's CAMs).
        refine_layers: patch-to-patch attention summed over this many last blocks (None = all, as the original).
        final_norm: apply the ViT's final LayerNorm before the heads (the original MCTformer-V2 does not).
        pos_resample: ``"authors"`` (default: the original's ``(grid + 0.1)`` scale factor) or ``"exact"``
            (resample to the grid size); :func:`resample_pos_embed`.
        **backbone_kwargs: passed to ``timm.create_model`` (``depth``, ``img_size``, ``drop_path_rate``, ...);
            ``num_classes=0`` and ``dynamic_img_size=True`` are set here.
    """

    def __init__(
        self,
        num_classes: int = 20,
        backbone: str = "deit_small_patch16_224",
        pretrained: bool = False,
        pretrained_path: str | os.PathLike[str] | None = None,
        attn_layers: int = 3,
        refine_layers: int | None = None,
        final_norm: bool = False,
        pos_resample: str = "authors",
        **backbone_kwargs: object,
    ) -> None:
        super().__init__()
        if pos_resample not in POS_RESAMPLES:
            raise ValueError(f"pos_resample must be one of {POS_RESAMPLES}, got {pos_resample!r}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
        for key in ("dynamic_img_size", "features_only"):
            if key in backbone_kwargs:
                raise ValueError(f"{key} is set by MCTformerV2Net; do not pass it in backbone kwargs")
        vit = create_backbone(
            backbone,
            pretrained=pretrained,
            pretrained_path=pretrained_path,
            num_classes=0,
            dynamic_img_size=True,
            **backbone_kwargs,
        )
        _check_vit(vit, backbone)
        depth = len(vit.blocks)
        for name, value, allow_none in (("attn_layers", attn_layers, False), ("refine_layers", refine_layers, True)):
            if value is None and allow_none:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= depth:
                raise ValueError(f"{name} must be an integer in [1, {depth}] (the backbone's depth), got {value!r}")

        self.num_classes = num_classes
        self.pos_resample = pos_resample
        self.embed_dim = int(vit.embed_dim)
        self.attn_layers = attn_layers
        self.refine_layers = depth if refine_layers is None else refine_layers
        self.patch_size = tuple(vit.patch_embed.patch_size)
        self.grid_size = tuple(vit.patch_embed.grid_size)

        # C class tokens, their position embeddings first in pos_embed (the original layout)
        loaded = pretrained or pretrained_path is not None
        with torch.no_grad():
            if loaded:
                cls_token = vit.cls_token.detach().repeat(1, num_classes, 1)
                cls_pos = vit.pos_embed[:, :1].detach().repeat(1, num_classes, 1)
            else:
                cls_token = trunc_normal_(vit.cls_token.new_empty(1, num_classes, self.embed_dim), std=0.02)
                cls_pos = trunc_normal_(vit.pos_embed.new_empty(1, num_classes, self.embed_dim), std=0.02)
            pos_embed = torch.cat([cls_pos, vit.pos_embed[:, vit.num_prefix_tokens :].detach()], dim=1)
        self.cls_token = nn.Parameter(cls_token.clone())
        self.pos_embed = nn.Parameter(pos_embed.clone())
        self.patch_embed = vit.patch_embed
        self.pos_drop = vit.pos_drop
        self.norm_pre = vit.norm_pre
        self.blocks = vit.blocks
        self.norm = vit.norm if final_norm else nn.Identity()
        self.head = nn.Conv2d(self.embed_dim, num_classes, kernel_size=3, stride=1, padding=1)

    def new_parameter_names(self) -> tuple[str, ...]:
        """Names of the parameters MCTformer adds to the ViT (the rest come from the backbone)."""
        return ("cls_token", "head.weight", "head.bias")

    def no_weight_decay(self) -> set[str]:
        """Parameters timm's optimizer factory exempts from weight decay besides biases and norms (as the original)."""
        return {"cls_token", "pos_embed"}

    def forward(self, images: torch.Tensor, attention: str = "none") -> MCTformerOutput:
        """Run the network.

        Args:
            images: ``(B, 3, H, W)`` ImageNet-normalised, any ``H, W`` >= the patch size: the grid is
                ``(H // 16, W // 16)`` and the rows / columns past it are not seen (the original's strided patch
                convolution drops them the same way).
            attention: ``"none"`` (logits and patch CAM: training), ``"class"`` (+ ``attn_maps``; differentiable,
                cheap: class query rows of the last ``attn_layers`` blocks) or ``"all"`` (+ ``patch_attn`` and the
                refined ``cams``: MCTformer-V2 inference).
        """
        if attention not in ATTENTION_MODES:
            raise ValueError(f"attention must be one of {ATTENTION_MODES}, got {attention!r}")
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or not images.is_floating_point():
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"images must be a float (B, 3, H, W) tensor, got {shape}")
        height, width = images.shape[-2:]
        ph, pw = self.patch_size
        if height < ph or width < pw:
            raise ValueError(f"image size {height}x{width} is smaller than the patch size {ph}x{pw}")
        batch, classes = images.shape[0], self.num_classes
        # timm's PatchEmbed refuses a remainder; the original's stride-16 convolution ignores it: crop it off
        images = images[..., : height - height % ph, : width - width % pw]

        x = self.patch_embed(images)  # (B, h, w, D): dynamic_img_size makes timm's PatchEmbed return NHWC
        h, w = x.shape[1], x.shape[2]
        x = x.reshape(batch, h * w, -1)
        pos = resample_pos_embed(
            self.pos_embed, (h, w), self.grid_size, classes, mode=self.pos_resample, square_image=height == width
        )
        x = torch.cat([self.cls_token.expand(batch, -1, -1), x], dim=1) + pos
        x = self.norm_pre(self.pos_drop(x))

        depth = len(self.blocks)
        class_attn = patch_attn = None
        for i, blk in enumerate(self.blocks):
            want_class = attention != "none" and i >= depth - self.attn_layers
            want_patch = attention == "all" and i >= depth - self.refine_layers
            if want_class or want_patch:
                weights = block_attention(blk, x, queries=None if want_patch else classes).mean(dim=1)
                if want_class:
                    rows = weights[:, :classes, classes:]
                    class_attn = rows if class_attn is None else class_attn + rows
                if want_patch:
                    rows = weights[:, classes:, classes:]
                    patch_attn = rows if patch_attn is None else patch_attn + rows
            x = blk(x)
        x = self.norm(x)

        token_logits = x[:, :classes].mean(dim=-1)
        patches = x[:, classes:].transpose(1, 2).reshape(batch, self.embed_dim, h, w)
        patch_cam = self.head(patches)
        out = MCTformerOutput(token_logits=token_logits, patch_logits=patch_cam.mean(dim=(2, 3)), patch_cam=patch_cam)
        if class_attn is not None:
            out.attn_maps = class_attn.reshape(batch, classes, h, w)
        if patch_attn is not None:
            out.patch_attn = patch_attn
            fused = out.fused.flatten(2)  # (B, C, hw)
            out.cams = (fused @ patch_attn.transpose(1, 2)).reshape(batch, classes, h, w)
        return out
