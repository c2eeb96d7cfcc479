"""The study spec layer: YAML -> validated, typed `StudySpec`, and the typed `TrialConfig` of one
trial (torch-free: sampling builds it, the engine reads it). Imports neither the CLI, Ray nor torch."""

from stability.spec.study import (DISTRIBUTIONS, SAMPLERS, Distribution, ModelEntry, Resources, SpecError, StudySpec,
                                  builtin_description, builtin_names, load_spec, parse_spec, read_spec_source,
                                  spec_reference)
from stability.spec.trial import OPTIMIZERS, DatasetConfig, Distillation, PatchLosses, Recipe, TeacherRecipe, TrialConfig

__all__ = ["DISTRIBUTIONS", "OPTIMIZERS", "SAMPLERS", "DatasetConfig", "Distillation", "Distribution", "ModelEntry",
           "PatchLosses", "Recipe", "Resources", "SpecError", "StudySpec", "TeacherRecipe", "TrialConfig",
           "builtin_description", "builtin_names", "load_spec", "parse_spec", "read_spec_source", "spec_reference"]
