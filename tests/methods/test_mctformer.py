"""MCTformer-V2 network and method: outputs, attention maps, class tokens, parameter groups, FSAE attachment.

A tiny DeiT (deit_tiny widths, depth 3, 64x64 pos-embed grid) keeps every test on the CPU in well under a second.
"""

from __future__ import annotations

import pytest
import timm
import torch

from fsae.losses import FSAELoss, attach_background
from fsae.methods.base import StepOutput
from fsae.methods.mctformer import MCTformerMethod
from fsae.models import PretrainedLoadWarning, load_pretrained
from fsae.models.mctformer_net import MCTformerV2Net, block_attention

C = 20
TINY = {"backbone": "deit_tiny_patch16_224", "depth": 3, "img_size": 64, "attn_layers": 2}


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors gain nothing from intra-op threads, and OpenMP spinning on a busy CPU costs 10x: use one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_net(**kwargs: object) -> MCTformerV2Net:
    return MCTformerV2Net(num_classes=C, **{**TINY, **kwargs})


def make_method(**kwargs: object) -> MCTformerMethod:
    return MCTformerMethod(num_classes=C, **{**TINY, "drop_path_rate": 0.0, **kwargs})


def make_labels(batch: int = 2) -> torch.Tensor:
    labels = torch.zeros(batch, C)
    labels[0, 3] = 1
    labels[1, 7] = labels[1, 14] = 1
    return labels


def capture_block_inputs(net: MCTformerV2Net) -> tuple[list[torch.Tensor], list]:
    inputs: list[torch.Tensor] = []
    hooks = [blk.register_forward_pre_hook(lambda _m, args: inputs.append(args[0].detach())) for blk in net.blocks]
    return inputs, hooks


# ---------------------------------------------------------------------------------------------------------- network


def test_net_outputs_shapes_and_dtypes_non_square() -> None:
    net = make_net().eval()
    images = torch.randn(2, 3, 64, 96)
    out = net(images, attention="all")
    assert out.token_logits.shape == (2, C) and out.patch_logits.shape == (2, C)
    assert out.patch_cam.shape == (2, C, 4, 6)
    assert out.attn_maps.shape == (2, C, 4, 6) and out.cams.shape == (2, C, 4, 6)
    assert out.patch_attn.shape == (2, 24, 24)
    for t in (out.token_logits, out.patch_logits, out.patch_cam, out.attn_maps, out.patch_attn, out.cams):
        assert t.dtype == torch.float32 and torch.isfinite(t).all()
    torch.testing.assert_close(out.patch_logits, out.patch_cam.mean(dim=(2, 3)))

    light = net(images)  # attention="none": no attention computed
    assert light.attn_maps is None and light.patch_attn is None and light.cams is None
    torch.testing.assert_close(light.patch_cam, out.patch_cam)
    cls_only = net(images, attention="class")
    assert cls_only.patch_attn is None and cls_only.cams is None
    torch.testing.assert_close(cls_only.attn_maps, out.attn_maps)
    with pytest.raises(ValueError, match="fused CAMs need"):
        _ = light.fused


def test_net_has_c_class_tokens_and_no_final_norm() -> None:
    net = make_net()
    assert net.cls_token.shape == (1, C, 192)
    assert net.pos_embed.shape == (1, C + 16, 192)  # C class positions, then the 4x4 grid of img_size=64
    assert isinstance(net.norm, torch.nn.Identity)  # MCTformer-V2 skips the ViT's final LayerNorm
    assert isinstance(make_net(final_norm=True).norm, torch.nn.LayerNorm)


def test_block_attention_is_the_blocks_softmax_with_qk_norm() -> None:
    net = make_net(qk_norm=True).eval()
    inputs, hooks = capture_block_inputs(net)
    net(torch.randn(2, 3, 64, 64))
    for h in hooks:
        h.remove()
    blk, x = net.blocks[1], inputs[1]
    weights = block_attention(blk, x)
    assert weights.shape == (2, blk.attn.num_heads, C + 16, C + 16) and weights.dtype == torch.float32
    assert (weights >= 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]))  # softmax over ALL keys
    # the weights reproduce the block's own attention output (scale and q/k norms handled)
    attn = blk.attn
    qkv = attn.qkv(blk.norm1(x)).reshape(2, C + 16, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    mixed = (weights @ qkv[2]).transpose(1, 2).reshape(2, C + 16, -1)
    torch.testing.assert_close(attn.proj(attn.norm(mixed)), attn(blk.norm1(x)), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(block_attention(blk, x, queries=C), weights[:, :, :C])


def test_attention_maps_are_sliced_softmax_rows_of_the_last_layers() -> None:
    net = make_net().eval()
    inputs, hooks = capture_block_inputs(net)
    out = net(torch.randn(2, 3, 64, 64), attention="all")
    for h in hooks:
        h.remove()
    full = [block_attention(blk, x).mean(dim=1) for blk, x in zip(net.blocks, inputs, strict=True)]
    expected_cls = sum(w[:, :C, C:] for w in full[-2:])  # attn_layers=2 of depth 3
    torch.testing.assert_close(out.attn_maps, expected_cls.reshape(2, C, 4, 4))
    torch.testing.assert_close(out.patch_attn, sum(w[:, C:, C:] for w in full))  # refine_layers: all blocks
    assert (out.attn_maps >= 0).all() and (out.patch_attn >= 0).all()
    # rows were normalised over class AND patch keys before slicing: patch mass per layer is below 1
    assert (out.attn_maps.sum(dim=(2, 3)) < 2).all() and (out.attn_maps.sum(dim=(2, 3)) > 0).all()
    fused = out.attn_maps * out.patch_cam.relu()
    refined = torch.einsum("bij,bcj->bci", out.patch_attn, fused.flatten(2)).reshape(2, C, 4, 4)
    torch.testing.assert_close(out.cams, refined)


def test_class_tokens_start_from_the_pretrained_token(tmp_path) -> None:
    vit = timm.create_model("deit_tiny_patch16_224", depth=3, img_size=64, num_classes=0)
    torch.nn.init.normal_(vit.cls_token)
    path = tmp_path / "deit_tiny.pth"
    torch.save({"model": vit.state_dict()}, path)
    net = make_net(pretrained_path=path)
    torch.testing.assert_close(net.cls_token, vit.cls_token.expand(1, C, -1))
    torch.testing.assert_close(net.pos_embed[:, :C], vit.pos_embed[:, :1].expand(1, C, -1))
    torch.testing.assert_close(net.pos_embed[:, C:], vit.pos_embed[:, 1:])
    torch.testing.assert_close(net.blocks[2].attn.qkv.weight, vit.blocks[2].attn.qkv.weight)


def test_original_checkpoint_layout_loads() -> None:
    """Our keys are the original MCTformer-V2's; its unused final norm is reported, the rest loads."""
    source = make_net()
    state = dict(source.state_dict())
    state["norm.weight"], state["norm.bias"] = torch.ones(192), torch.zeros(192)
    target = make_net()
    with pytest.warns(PretrainedLoadWarning, match="2 unexpected"):
        report = load_pretrained(target, state)
    assert sorted(report.unexpected) == ["norm.bias", "norm.weight"] and not report.missing
    torch.testing.assert_close(target.cls_token, source.cls_token)
    torch.testing.assert_close(target.head.weight, source.head.weight)


def test_input_and_option_validation() -> None:
    net = make_net()
    with pytest.raises(ValueError, match="smaller than the patch size"):
        net(torch.randn(1, 3, 64, 15))
    with pytest.raises(ValueError, match="pos_resample must be one of"):
        make_net(pos_resample="nearest")
    with pytest.raises(ValueError, match="attention must be one of"):
        net(torch.randn(1, 3, 64, 64), attention="patch")
    with pytest.raises(ValueError, match="attn_layers must be an integer in"):
        make_net(attn_layers=4)
    with pytest.raises(ValueError, match="set by MCTformerV2Net"):
        make_net(dynamic_img_size=False)
    with pytest.raises(ValueError, match="fsae_attach must be one of"):
        make_method(fsae_attach="learned")
    with pytest.raises(ValueError, match="eval_cam must be one of"):
        make_method(eval_cam="fused")


def test_a_remainder_past_the_patch_grid_is_dropped() -> None:
    """64x70: the last 6 columns are not seen (the original's strided patch conv). With ``pos_resample="exact"``
    it is exactly the 64x64 crop; the authors' resampling treats the non-square image differently (their
    ``w == h`` test), so there the position embedding is resampled although the grid is the pretraining one."""
    torch.manual_seed(0)
    image = torch.randn(1, 3, 64, 70)
    exact = make_net(pos_resample="exact").eval()
    authors = make_net().eval()
    authors.load_state_dict(exact.state_dict())
    with torch.no_grad():
        whole, crop = exact(image, attention="all"), exact(image[..., :64], attention="all")
        torch.testing.assert_close(whole.cams, crop.cams, rtol=0, atol=0)
        torch.testing.assert_close(authors(image[..., :64], attention="all").cams, crop.cams, rtol=0, atol=0)
        assert not torch.allclose(authors(image, attention="all").cams, crop.cams)


# ---------------------------------------------------------------------------------------------------------- method


def test_training_step_outputs_and_class_token_gradients() -> None:
    method = make_method()
    images, labels = torch.randn(2, 3, 64, 64), make_labels()
    step = method.training_step(images, labels, strong=images + 0.1)
    assert isinstance(step, StepOutput) and set(step.losses) == {"cls_token", "cls_patch"}
    for value in step.losses.values():
        assert value.dim() == 0 and value.dtype == torch.float32 and torch.isfinite(value)
    assert step.strong_logits.shape == (2, C + 1, 4, 4) and step.strong_logits.dtype == torch.float32
    assert method.training_step(images, labels).strong_logits is None

    step.losses["cls_token"].backward()  # the class-token loss alone trains each of the C tokens
    grad = method.net.cls_token.grad
    assert grad is not None and (grad[0].abs().sum(-1) > 0).all()
    assert not torch.allclose(grad[0, 3], grad[0, 5])  # tokens of present and absent classes pull apart
    assert method.net.head.weight.grad is None  # ...and not the conv head, which only cls_patch trains


@pytest.mark.parametrize("attach", ["derived", "fused"])
@pytest.mark.parametrize("gate", [True, False])
def test_cam_logits_softmax_is_the_normalised_distribution(attach: str, gate: bool) -> None:
    method = make_method(fsae_attach=attach, gate=gate)
    images = torch.randn(2, 3, 64, 64)
    logits = method.cam_logits(images)  # train mode: the fsae_attach maps
    assert logits.shape == (2, C + 1, 4, 4) and logits.dtype == torch.float32 and (logits >= 0).all()

    out = method.net(images, attention="class")
    maps = (out.attn_maps * out.patch_cam.relu()) if attach == "fused" else out.patch_cam.relu()
    n = maps / (maps.amax(dim=(2, 3), keepdim=True) + 1e-5)
    if gate:
        n = n * out.patch_logits.sigmoid()[:, :, None, None]
    p = torch.cat([1 - n.amax(dim=1, keepdim=True), n], dim=1).clamp_min(1e-4)
    torch.testing.assert_close(logits.softmax(dim=1), p / p.sum(dim=1, keepdim=True), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(method(images), logits)  # method(images) = cam_logits, label-free
    labels = make_labels()
    step = method(images, labels, strong=images)  # method(images, labels, ...) = training_step (DDP path)
    labelled = method(images, labels, cam_only=True)  # what the trainer's teacher and student call
    torch.testing.assert_close(step.strong_logits, labelled)
    p = torch.cat([1 - (n * labels[:, :, None, None]).amax(dim=1, keepdim=True), n * labels[:, :, None, None]], dim=1)
    p = p.clamp_min(1e-4)
    torch.testing.assert_close(labelled.softmax(dim=1), p / p.sum(dim=1, keepdim=True), rtol=1e-5, atol=1e-6)


def test_cam_logits_in_eval_mode_use_the_refined_cams() -> None:
    method = make_method().eval()
    images = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        out = method.net(images, attention="all")
        torch.testing.assert_close(method.cam_logits(images), attach_background(out.cams, gate_logits=out.patch_logits))
        method.eval_cam = "attach"
        expected = attach_background(out.patch_cam, gate_logits=out.patch_logits)
        torch.testing.assert_close(method.cam_logits(images), expected)


def test_attached_logits_reach_the_fsae_threshold_through_the_gate() -> None:
    """A confident class (sigmoid >= 0.99) at its peak, VOC and COCO class counts."""
    for classes in (20, 80):
        maps = torch.zeros(1, classes, 1, 2)
        maps[0, 0, 0, 0] = 1.0
        gate = torch.full((1, classes), -5.0)
        gate[0, 0] = 5.0
        probs = attach_background(maps, gate_logits=gate).softmax(dim=1)[0, :, 0]
        assert probs[1, 0] > 0.95 and probs[0, 1] > 0.95  # foreground at the peak, background elsewhere
        gate[0, 0] = 0.0  # an unsure classifier (sigmoid 0.5): not confident yet, FSAE's built-in warm-up
        assert attach_background(maps, gate_logits=gate).softmax(dim=1)[0, 1, 0, 0] < 0.6


def test_parameter_groups_partition_trainable_parameters() -> None:
    method = make_method(new_lr_mult=10.0)
    groups = method.parameter_groups()
    seen = [id(p) for g in groups for p in g["params"]]
    trainable = {id(p) for p in method.parameters() if p.requires_grad}
    assert len(seen) == len(set(seen)) and set(seen) == trainable
    net = method.net
    new = {id(net.cls_token), id(net.head.weight), id(net.head.bias)}
    for g in groups:
        ids = {id(p) for p in g["params"]}
        assert g["lr_mult"] == (10.0 if ids <= new else 1.0) and (ids <= new or not ids & new)
        if "weight_decay" in g:  # no decay: biases, norm weights, pos_embed, cls_token (timm's rule, as the original)
            assert g["weight_decay"] == 0.0 and all(
                p.ndim <= 1 or p is net.pos_embed or p is net.cls_token for p in g["params"]
            )
        else:
            assert all(p.ndim >= 2 and p is not net.pos_embed and p is not net.cls_token for p in g["params"])
    assert [g["lr_mult"] for g in groups] == [1.0, 1.0, 10.0, 10.0]  # pretrained first, then new
    assert all(g["lr_mult"] == 1.0 for g in make_method().parameter_groups())  # the original: one learning rate


# ---------------------------------------------------------------------------------------------------------- FSAE


@pytest.mark.parametrize("attach", ["derived", "fused"])
def test_fsae_loss_backpropagates_into_the_network(attach: str) -> None:
    method = make_method(fsae_attach=attach)
    images, labels = torch.randn(2, 3, 64, 64), make_labels()
    step = method.training_step(images, labels, strong=images * 0.9)
    # a confident teacher: background on the left half, each image's first present class on the right half
    teacher = torch.zeros(2, C + 1, 4, 4)
    teacher[:, 0, :, :2] = 10.0
    teacher[0, 4, :, 2:] = 10.0
    teacher[1, 8, :, 2:] = 10.0
    loss = FSAELoss()(step.strong_logits, teacher, labels)
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    assert method.net.head.weight.grad.abs().sum() > 0
    assert method.net.blocks[-1].mlp.fc2.weight.grad.abs().sum() > 0
