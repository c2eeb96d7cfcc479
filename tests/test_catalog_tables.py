"""The torch-free tables the input checks use (`models/catalog.py`, `data/checks.py`), compared with
what they describe: timm's constructors, the models really built, and the loaders' data."""

from __future__ import annotations

import dataclasses
import inspect

import pytest


def _init_params(cls) -> set[str]:
    skip = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return {p.name for p in inspect.signature(cls.__init__).parameters.values() if p.kind not in skip} - {"self"}


def test_model_args_tables_are_the_timm_constructors_arguments():
    from timm.models.cait import Cait
    from timm.models.regnet import RegNet, RegNetCfg
    from timm.models.vision_transformer import VisionTransformer

    from stability.models.catalog import BUILDER_FIXED, ENGINE_ARGS, MODEL_ARGS

    left_out = set(ENGINE_ARGS) | {"device", "dtype"}
    fixed = {family: set(BUILDER_FIXED.get(family, ())) for family in MODEL_ARGS}
    assert set(MODEL_ARGS["vit"]) == _init_params(VisionTransformer) - left_out
    # the distilled DeiT class passes every argument on to VisionTransformer
    assert set(MODEL_ARGS["deit"]) == _init_params(VisionTransformer) - left_out - fixed["deit"]
    assert set(MODEL_ARGS["cait"]) == _init_params(Cait) - left_out - fixed["cait"]
    # RegNet overlays its extra keyword arguments onto its variant's RegNetCfg
    assert set(MODEL_ARGS["regnety"]) == (_init_params(RegNet) - left_out - {"cfg"}) | {
        f.name for f in dataclasses.fields(RegNetCfg)}
    for family, names in MODEL_ARGS.items():
        assert len(names) == len(set(names)), family


def test_every_model_is_built_by_the_class_its_family_names():
    """Each catalog name's family is the timm class its builder makes; the builder passes model_args
    on to it (an argument the class lacks is a TypeError), except those it fixes itself."""
    import torch
    from timm.models.cait import Cait
    from timm.models.regnet import RegNet
    from timm.models.vision_transformer import VisionTransformer

    from stability.models import build_model, list_models
    from stability.models.catalog import BUILDER_FIXED, model_family

    classes = {"vit": VisionTransformer, "deit": VisionTransformer, "cait": Cait, "regnety": RegNet}
    examples = {"vit": "vit_p_tiny", "deit": "deit_tiny_p4", "cait": "cait_xxs12_p4", "regnety": "regnety_1gf"}
    with torch.device("meta"):
        for name in list_models():
            family = model_family(name)
            assert isinstance(build_model(name, 10, 32, in_chans=3), classes[family]), name
        for family, name in examples.items():
            assert model_family(name) == family
            with pytest.raises(TypeError):
                build_model(name, 10, 32, in_chans=3, no_such_arg=1)
            build_model(name, 10, 32, in_chans=3, drop_path_rate=0.1)
            for key in BUILDER_FIXED.get(family, ()):  # when this builds, the builder takes the key: allow it
                with pytest.raises(TypeError, match=key):
                    build_model(name, 10, 32, in_chans=3, **{key: {"patch_size": 4, "depth": 12}[key]})
    assert model_family("nope") is None


@pytest.mark.parametrize("name", ["vit_p_tiny", "vit_c_tiny", "vit_c_1gf", "deit_tiny_p4", "cait_xxs12_p4", "regnety_1gf"])
def test_image_size_and_model_args_checks_agree_with_building_the_model(name):
    import torch

    from stability.models import build_model
    from stability.models.catalog import check_model_args, check_model_input
    from stability.spec import TrialSetupError

    with torch.device("meta"):
        for img_size in (8, 12, 16, 30, 32):
            for model_args in ({}, {"patch_size": 4}, {"patch_size": 8}, *([{"depth": 2}] if "regnety" not in name else [])):
                try:
                    check_model_args(name, model_args)
                    check_model_input(name, img_size, model_args)
                    refused = None
                except TrialSetupError as exc:
                    refused = exc
                try:
                    build_model(name, 10, img_size, in_chans=3, **model_args)
                    built = True
                except (TrialSetupError, TypeError):
                    built = False
                assert built == (refused is None), (name, img_size, model_args, refused)


def test_dataset_facts_are_the_loaders():
    import torch

    from stability.data import cifar, digits, imagefolder, shards, synthetic
    from stability.data.checks import DATASET_FACTS, data_shape, train_images

    modules = {"digits": digits, "cifar10": cifar, "cifar100": cifar, "synthetic": synthetic, "imagefolder": imagefolder,
               "shards": shards}
    for name, module in modules.items():
        facts = DATASET_FACTS[name]
        assert (facts.img_size, facts.min_img_size, facts.max_img_size) == (
            module.DEFAULT_IMG_SIZE, module.MIN_IMG_SIZE, module.MAX_IMG_SIZE), name
        assert facts.options == getattr(module, "OPTIONS", ()), name
    for name in ("cifar10", "cifar100"):
        assert DATASET_FACTS[name].num_classes == cifar.NUM_CLASSES[name]
        assert DATASET_FACTS[name].train_size == 50000  # 5 training batches of 10000 images
    loaded = digits.load_digits_dataset(None, torch.device("cpu"))
    assert train_images("digits", {}) == loaded.train_size
    assert data_shape("digits", loaded.img_size, {}) == {"num_classes": loaded.num_classes,
                                                         "img_size": loaded.img_size, "in_chans": loaded.in_chans}
    defaults = inspect.signature(synthetic.load_synthetic).parameters
    assert train_images("synthetic", {}) == defaults["train_size"].default
    assert data_shape("synthetic", 8, {}) == {"num_classes": defaults["num_classes"].default, "img_size": 8,
                                              "in_chans": defaults["in_chans"].default}
    options = {"train_size": 24, "num_classes": 5, "in_chans": 2}
    small = synthetic.load_synthetic(8, torch.device("cpu"), **options)
    assert train_images("synthetic", options) == small.train_size
    assert data_shape("synthetic", 8, options) == {"num_classes": 5, "img_size": 8, "in_chans": 2}


