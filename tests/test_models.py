"""Model registry, paper sizes, ViT_C stem and init, patch-token statistics (real timm models, CPU)."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
from torch import nn

from stability.models import (block_patch_tokens, build_model, list_models, model_info,
                              patch_cosine_similarity)

PAPER_TABLE = {  # name: (params in millions, GFLOPs) from Xiao et al. 2021, Table 1
    "vit_p_1gf": (4.8, 1.1), "vit_p_4gf": (18.5, 3.9), "vit_p_18gf": (86.7, 17.5), "vit_p_36gf": (178.4, 35.9),
    "vit_c_1gf": (4.6, 1.1), "vit_c_4gf": (17.8, 4.0), "vit_c_18gf": (81.6, 17.7), "vit_c_36gf": (167.8, 35.0),
}
SMALL_IMAGE_MODELS = [name for name in list_models() if name.endswith(("_tiny", "_small", "_p4"))]
STEM_LAYOUTS = {  # kernels, strides, output channels (the last is the embedding width)
    "vit_c_1gf": ((3, 3, 3, 3, 1), (2, 2, 2, 2, 1), (24, 48, 96, 192, 192)),
    "vit_c_18gf": ((3, 3, 3, 3, 3, 3, 1), (2, 2, 1, 2, 1, 2, 1), (64, 128, 128, 256, 256, 512, 768)),
}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one intra-op thread is faster and immune to a busy second core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def natural_size(name: str) -> int:
    return 32 if name in SMALL_IMAGE_MODELS else 224


def build_on_meta(name: str, num_classes: int = 1000, img_size: int | None = None, **overrides) -> nn.Module:
    with torch.device("meta"):
        return build_model(name, num_classes, img_size or natural_size(name), **overrides)


def stem_convs(model: nn.Module) -> list[nn.Conv2d]:
    return [m for m in model.patch_embed.proj if isinstance(m, nn.Conv2d)]


# --- registry -----------------------------------------------------------------------------------------

def test_registry_lists_every_family_sorted():
    names = list_models()
    assert names == sorted(names)
    expected = {"vit_p_1gf", "vit_c_36gf", "vit_p_tiny", "vit_c_tiny", "vit_p_small", "vit_c_small",
                "deit_tiny", "deit_base_distilled", "deit_tiny_p4", "deit_small_p4", "deit_tiny_distilled_p4",
                "cait_xxs24", "cait_s24", "cait_xxs24_p4", "cait_xxs12_p4",
                "regnety_1gf", "regnety_4gf", "regnety_16gf"}
    assert expected <= set(names)


def test_torch_free_catalog_names_exactly_the_registered_builders():
    from stability.models import has_patch_tokens, registered_models

    assert registered_models() == list_models()
    for name in ("vit_c_tiny", "deit_tiny_p4", "regnety_1gf"):
        assert has_patch_tokens(name) == hasattr(build_model(name, 10, 32, in_chans=1), "blocks"), name
    assert not has_patch_tokens("nope")


def test_validating_a_study_does_not_import_torch(tmp_path):
    """The sweep driver checks and plans a study without torch (its import costs seconds per sweep)."""
    code = ("import sys\n"
            "from stability.models import list_models, has_patch_tokens\n"
            "from stability.sweep.__main__ import main\n"
            "assert main(['default', '--dry-run', '--storage', sys.argv[1]]) == 0\n"
            "assert 'torch' not in sys.modules and 'timm' not in sys.modules, 'torch was imported'\n")
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, capture_output=True)


def test_unknown_model_error_lists_choices():
    with pytest.raises(ValueError, match="unknown model 'nope'; choose from: ") as info:
        build_model("nope", 10, 32)
    assert "vit_p_tiny" in str(info.value) and "regnety_1gf" in str(info.value)


@pytest.mark.parametrize("bad, message", [
    (dict(num_classes=0), "num_classes must be a positive integer, got 0"),
    (dict(img_size=-1), "img_size must be a positive integer, got -1"),
    (dict(pretrained=True), "pretrained weights are not supported"),
])
def test_invalid_arguments_fail_fast(bad, message):
    kwargs = {"num_classes": 10, "img_size": 32, **bad}
    with pytest.raises(ValueError, match=message):
        build_model("vit_p_tiny", **kwargs)


def test_image_size_must_fit_patch_and_stem():
    with pytest.raises(ValueError, match="not divisible"):
        build_model("vit_p_tiny", 10, 30)
    with pytest.raises(ValueError, match="patch_size"):
        build_model("vit_c_tiny", 10, 32, patch_size=8)


@pytest.mark.parametrize("name", list_models())
def test_every_model_builds_and_reports_size(name):
    model = build_on_meta(name, num_classes=7)
    assert model.num_classes == 7
    if name in PAPER_TABLE:  # measured against the paper below
        return
    info = model_info(model, natural_size(name))
    assert info["params"] == sum(p.numel() for p in model.parameters()) > 0
    assert info["gflops"] > 0


# --- paper sizes --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(PAPER_TABLE))
def test_paper_params_and_gflops(name):
    params_m, gflops = PAPER_TABLE[name]
    info = model_info(build_on_meta(name), 224)
    assert info["params"] / 1e6 == pytest.approx(params_m, rel=0.03)
    assert info["gflops"] == pytest.approx(gflops, rel=0.05)


@pytest.mark.parametrize("size", ["1gf", "4gf", "18gf", "36gf", "tiny", "small"])
def test_vit_c_has_one_block_fewer(size):
    patchify = build_on_meta(f"vit_p_{size}")
    conv = build_on_meta(f"vit_c_{size}")
    assert len(conv.blocks) == len(patchify.blocks) - 1
    assert conv.embed_dim == patchify.embed_dim


@pytest.mark.parametrize("size", ["tiny", "small"])
def test_small_variants_match_flops_at_32px(size):
    patchify = model_info(build_model(f"vit_p_{size}", 10, 32), 32)["gflops"]
    conv = model_info(build_model(f"vit_c_{size}", 10, 32), 32)["gflops"]
    assert conv == pytest.approx(patchify, rel=0.15)


# --- ViT_C stem and pycls init ------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(STEM_LAYOUTS))
def test_conv_stem_layout(name):
    kernels, strides, channels = STEM_LAYOUTS[name]
    layers = list(build_on_meta(name).patch_embed.proj)
    convs = [m for m in layers if isinstance(m, nn.Conv2d)]
    assert [c.kernel_size[0] for c in convs] == list(kernels)
    assert [c.stride[0] for c in convs] == list(strides)
    assert [c.out_channels for c in convs] == list(channels)
    assert all(c.bias is None for c in convs[:-1]) and convs[-1].bias is not None
    for i, conv in enumerate(convs[:-1]):  # each 3x3 conv is followed by BN then ReLU
        at = layers.index(conv)
        assert isinstance(layers[at + 1], nn.BatchNorm2d) and isinstance(layers[at + 2], nn.ReLU)
    assert layers[-1] is convs[-1]  # no norm or activation after the final 1x1
    assert math.prod(strides) == 16


def test_pycls_init_of_conv_stem_and_head():
    torch.manual_seed(0)
    model = build_model("vit_c_18gf", 10, 32, patch_size=16, depth=1)
    assert torch.count_nonzero(model.head.weight) == 0 and torch.count_nonzero(model.head.bias) == 0
    convs = stem_convs(model)
    for conv in convs[:-1]:
        expected = math.sqrt(2.0 / (conv.kernel_size[0] * conv.kernel_size[1] * conv.out_channels))
        assert conv.weight.std().item() == pytest.approx(expected, rel=0.1)
    assert convs[-1].weight.std().item() == pytest.approx(math.sqrt(1.0 / convs[-1].out_channels), rel=0.1)
    assert torch.count_nonzero(convs[-1].bias) == 0
    for norm in (m for m in model.patch_embed.proj if isinstance(m, nn.BatchNorm2d)):
        assert torch.all(norm.weight == 1) and torch.all(norm.bias == 0)
    assert model.pos_embed.std().item() == pytest.approx(0.02, rel=0.1)


def test_pycls_init_of_patchify_conv():
    torch.manual_seed(0)
    model = build_model("vit_p_4gf", 10, 32, patch_size=16, depth=1)
    conv = model.patch_embed.proj
    fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
    assert conv.weight.std().item() == pytest.approx(math.sqrt(1.0 / fan_in), rel=0.1)
    assert torch.count_nonzero(model.head.weight) == 0
    assert isinstance(model.norm, nn.LayerNorm) and model.norm.eps == 1e-6


# --- forward / backward at small sizes ----------------------------------------------------------------

FAMILY_SAMPLES = ["vit_p_tiny", "vit_c_tiny", "vit_p_small", "vit_c_small", "deit_tiny_p4",
                  "deit_tiny_distilled_p4", "cait_xxs12_p4", "regnety_1gf"]


@pytest.mark.parametrize("name", FAMILY_SAMPLES)
@pytest.mark.parametrize("img_size,in_chans", [(16, 1), (32, 3)])
def test_forward_backward_small_images(name, img_size, in_chans):
    torch.manual_seed(0)
    model = build_model(name, 10, img_size, in_chans=in_chans)
    model.train()
    logits = model(torch.randn(2, in_chans, img_size, img_size))
    assert logits.shape == (2, 10)
    logits.square().sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


@pytest.mark.parametrize("name", ["vit_p_tiny", "vit_c_tiny"])
def test_small_variants_work_at_8_to_64_px(name):
    for img_size in (8, 16, 32, 64):
        model = build_model(name, 10, img_size, in_chans=1).eval()
        with torch.no_grad():
            assert model(torch.randn(1, 1, img_size, img_size)).shape == (1, 10)


def test_overrides_reach_timm_constructor():
    model = build_model("vit_p_tiny", 10, 16, init_values=1e-3, drop_path_rate=0.1, in_chans=1)
    assert torch.allclose(model.blocks[0].ls1.gamma, torch.full_like(model.blocks[0].ls1.gamma, 1e-3))
    assert model.patch_embed.proj.in_channels == 1
    cait = build_on_meta("cait_xxs24", depth_token_only=1)
    assert len(cait.blocks_token_only) == 1


def test_distilled_deit_returns_tuple_in_distilled_training():
    model = build_model("deit_tiny_distilled_p4", 10, 16)
    x = torch.randn(2, 3, 16, 16)
    model.set_distilled_training(True)
    model.train()
    cls_logits, dist_logits = model(x)
    assert cls_logits.shape == dist_logits.shape == (2, 10)
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 10)


@pytest.mark.parametrize("name,depth,gamma", [("cait_xxs12_p4", 12, 0.1), ("cait_xxs24_p4", 24, 1e-5)])
def test_cait_layer_scale_init(name, depth, gamma):
    model = build_model(name, 10, 16)
    assert len(model.blocks) == depth and len(model.blocks_token_only) == 2
    for block in [*model.blocks, *model.blocks_token_only]:
        for param in (block.gamma_1, block.gamma_2):
            assert torch.allclose(param, torch.full_like(param, gamma))


# --- model_info ---------------------------------------------------------------------------------------

def test_model_info_leaves_model_untouched():
    model = build_model("vit_c_tiny", 10, 16, in_chans=1).train()
    model.blocks[0].eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    info = model_info(model, 16, in_chans=1)
    assert model.training and not model.blocks[0].training and model.blocks[1].training
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert info["params"] == sum(p.numel() for p in model.parameters())
    assert 0 < info["gflops"] < 0.01


# --- patch tokens and over-smoothing metric -----------------------------------------------------------

@pytest.mark.parametrize("name,img_size,patch", [("vit_p_tiny", 16, 4), ("vit_c_tiny", 32, 4),
                                                 ("deit_tiny_distilled_p4", 16, 4), ("cait_xxs12_p4", 16, 4)])
def test_block_patch_tokens_shapes(name, img_size, patch):
    model = build_model(name, 10, img_size).train()
    tokens = block_patch_tokens(model, torch.randn(3, 3, img_size, img_size))
    assert len(tokens) == len(model.blocks)
    n = (img_size // patch) ** 2
    assert all(t.shape == (3, n, model.embed_dim) and not t.requires_grad for t in tokens)
    assert model.training
    assert all(not block._forward_hooks for block in model.blocks)


def test_block_patch_tokens_drop_prefix_tokens():
    model = build_model("deit_tiny_distilled_p4", 10, 16).eval()
    x = torch.randn(2, 3, 16, 16)
    last = block_patch_tokens(model, x)[-1]
    with torch.no_grad():
        reference = model.forward_intermediates(x, output_fmt="NLC", intermediates_only=True)[-1]
    assert model.num_prefix_tokens == 2 and last.shape == reference.shape
    assert torch.allclose(last, reference, atol=1e-5)


def test_block_patch_tokens_empty_for_cnn():
    model = build_model("regnety_1gf", 10, 16)
    assert block_patch_tokens(model, torch.randn(2, 3, 16, 16)) == []


def naive_cosine_similarity(tokens: torch.Tensor) -> torch.Tensor:
    unit = torch.nn.functional.normalize(tokens, dim=-1)
    sims = unit @ unit.transpose(1, 2)
    n = tokens.shape[1]
    off_diagonal = sims.sum(dim=(1, 2)) - sims.diagonal(dim1=1, dim2=2).sum(dim=1)
    return (off_diagonal / (n * (n - 1))).mean()


def test_patch_cosine_similarity_matches_naive_and_is_differentiable():
    torch.manual_seed(0)
    tokens = (torch.randn(4, 9, 16, dtype=torch.float64) + 0.3).requires_grad_()
    value = patch_cosine_similarity(tokens)
    assert value.dtype == torch.float32 and value.dim() == 0
    assert value.item() == pytest.approx(naive_cosine_similarity(tokens.detach()).item(), abs=1e-5)
    value.backward()
    assert tokens.grad is not None and torch.isfinite(tokens.grad).all()


def test_patch_cosine_similarity_identical_tokens_is_one():
    row = torch.randn(1, 1, 32)
    assert patch_cosine_similarity(row.expand(2, 10, 32)).item() == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="need at least two patch tokens"):
        patch_cosine_similarity(torch.randn(2, 1, 8))
    with pytest.raises(ValueError, match=r"expected tokens of shape \(batch, patches, dim\), got \(10, 32\)"):
        patch_cosine_similarity(torch.randn(10, 32))
