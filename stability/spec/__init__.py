"""The study spec layer: YAML -> validated, typed `StudySpec`, and the typed `TrialConfig` of one
trial (torch-free: sampling builds it, the engine reads it). Imports neither the CLI, Ray nor torch.

Modules: `study` (StudySpec and its parts), `load` (YAML files, built-ins, `--set`), `yaml_loader`
(bounded safe YAML), `trial` (TrialConfig and the recipe),
`knobs` (tuple paths to a knob), `errors` (SpecError, TrialSetupError, the validation-error line).
"""

from stability.spec.errors import SpecError, TrialSetupError, validation_message
from stability.spec.knobs import KnobPath, dotted, parse_path
from stability.spec.load import (apply_overrides, builtin_description, builtin_names, load_spec, parse_override,
                                 parse_spec, read_spec_source, spec_reference)
from stability.spec.study import DISTRIBUTIONS, SAMPLERS, Distribution, ModelEntry, Resources, StudySpec
from stability.spec.trial import (
                                  OPTIMIZER_DEFAULTS,
                                  OPTIMIZERS,
                                  DatasetConfig,
                                  Distillation,
                                  OptimizerArgs,
                                  PatchLosses,
                                  Recipe,
                                  TeacherRecipe,
                                  TrialConfig,
)

__all__ = ["DISTRIBUTIONS", "OPTIMIZERS", "OPTIMIZER_DEFAULTS", "SAMPLERS", "DatasetConfig", "Distillation",
           "Distribution", "KnobPath", "ModelEntry", "OptimizerArgs", "PatchLosses", "Recipe", "Resources", "SpecError",
           "StudySpec", "TeacherRecipe", "TrialConfig", "TrialSetupError", "apply_overrides", "builtin_description",
           "builtin_names", "dotted", "load_spec", "parse_override", "parse_path", "parse_spec", "read_spec_source",
           "spec_reference", "validation_message"]
