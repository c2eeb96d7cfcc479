"""The GPU targets of the benchmarks, in one place (no torch: the GPU check's summary reads them too)."""

from __future__ import annotations

MFU_TARGET = 0.40  # engine MFU, vit_p_4gf at 224 px, bf16, compiled
MFU_MODEL, MFU_IMG_SIZE = "vit_p_4gf", 224  # the model and resolution the MFU target names
FOUR_GF = 3.0  # GMACs from which the gpu benchmark prints the MFU target line (the 4 GF models and larger)
RATIO_TARGET = 2.0  # engine images/s over the plain fp32 DataLoader loop's, every model
FUSED_TARGET, FUSED_K, FUSED_IMG_SIZE = 8.0, 16, 32  # fused K=16 at 32 px over one by one (study throughput)
CIFAR_TARGET_MINUTES = 20.0  # projected cifar10_lr_wd (256 trials x 50 epochs) on one H200
GPU_MODELS = {"vit_p_1gf": 224, "vit_c_1gf": 224, "vit_p_4gf": 224, "deit_small": 224, "vit_p_tiny": 32}  # model -> px
