"""Credentials stay out of what Ray and Tune write to disk.

Tune saves each trial's config (`param_space`) in its experiment state files (the Tune folder and
the Ray session's `driver_artifacts`), and it copies the driver's AWS credential variables into the
runtime environment of every trial actor, which Ray's `runtime_env_agent.log` writes out in plain
text. So the sweep hands trials what may carry credentials (the checkpoints' URI, whose user info
may hold keys, and the driver's AWS variables) through Ray's object store (`tune.with_parameters`,
held in memory) instead, and takes the AWS variables off Tune's list of variables to copy.
"""

from __future__ import annotations

import os

AWS_CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SECURITY_TOKEN", "AWS_SESSION_TOKEN")


def trial_environment() -> dict[str, str]:
    """The driver's AWS credential variables, for the trial processes (empty when none are set)."""
    return {name: os.environ[name] for name in AWS_CREDENTIALS if name in os.environ}


def keep_credentials_out_of_runtime_env() -> bool:
    """Take the AWS credential variables off the list Tune copies into trial actors' runtime
    environment (Ray 2.x: `ray.tune.execution.class_cache.ENV_VARS_TO_PROPAGATE`). False when this
    Ray keeps that list elsewhere: Tune then copies them as before (docs/reliability.md)."""
    try:
        from ray.tune.execution import class_cache
    except ImportError:
        return False
    names = getattr(class_cache, "ENV_VARS_TO_PROPAGATE", None)
    if not isinstance(names, (set, frozenset)):
        return False
    class_cache.ENV_VARS_TO_PROPAGATE = type(names)(name for name in names if name not in AWS_CREDENTIALS)
    return True


def use_environment(environment: dict[str, str] | None) -> None:
    """In a trial process: the variables the driver handed over, as Tune's copy would have set them."""
    os.environ.update(environment or {})
