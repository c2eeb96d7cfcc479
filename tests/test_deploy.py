"""deploy/: the Ray cluster launcher YAML passes the installed Ray's own checks (prepare_config, then
validate_config against ray-schema.json), and the KubeRay RayJob has the fields KubeRay requires,
a GPU worker group and an entrypoint that is a valid sweep command for that cluster. Offline."""

from __future__ import annotations

import copy
import shlex

import jsonschema
import pytest
import ray
import yaml
from conftest import REPO

from stability.sampling import plan_trials
from stability.spec import load_spec
from stability.sweep.__main__ import parse_args
from stability.sweep.estimate import processes, slots

LAUNCHER = REPO / "deploy" / "cluster.yaml"
RAYJOB = REPO / "deploy" / "rayjob.yaml"


def prepared_launcher(config: dict) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))  # fills Ray's provider defaults first, as `ray up` does
    validate_config(prepared)
    return prepared


def test_the_launcher_yaml_passes_rays_own_validation_and_has_a_gpu_node_type():
    raw = yaml.safe_load(LAUNCHER.read_text())
    config = prepared_launcher(raw)
    types = config["available_node_types"]
    assert config["head_node_type"] in types
    gpu_types = [name for name, t in types.items() if t.get("resources", {}).get("GPU", 0) > 0]
    assert gpu_types and all(types[name]["max_workers"] >= 1 for name in gpu_types)
    # the sweep decides GPUs per trial, and refuses trials that cannot be placed, from the cluster it finds
    assert any(types[name]["min_workers"] >= 1 for name in gpu_types), "a GPU node from the start"
    assert types[config["head_node_type"]]["resources"].get("CPU") == 0, "no trials on the head"
    starts = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    assert all("RAY_AUTH_MODE=token" in c for c in starts if "ray start" in c), "every node in token mode"
    assert "~/.ray/auth_token" in config["file_mounts"], "the same token on every node"
    assert any("~/stability" in c for c in config["setup_commands"])


def test_the_launcher_check_refuses_a_broken_config():
    raw = yaml.safe_load(LAUNCHER.read_text())
    with pytest.raises(jsonschema.ValidationError):
        prepared_launcher({**raw, "max_wrkers": 4})
    broken = copy.deepcopy(raw)
    broken["available_node_types"]["gpu_8x_h200"]["resources"] = {"GPU": "eight"}
    with pytest.raises(jsonschema.ValidationError):
        prepared_launcher(broken)


def container_resources(template: dict) -> tuple[float, float]:
    limits = template["spec"]["containers"][0]["resources"]["limits"]
    return float(limits["cpu"]), float(limits.get("nvidia.com/gpu", 0))


def test_the_rayjob_has_what_kuberay_requires_and_a_gpu_worker_group():
    job = yaml.safe_load(RAYJOB.read_text())
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob" and job["metadata"]["name"]
    spec = job["spec"]
    assert isinstance(spec["entrypoint"], str) and spec["shutdownAfterJobFinishes"] is True
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"].split(".")[:2] == ray.__version__.split(".")[:2], "the image's Ray is the tested one"
    assert cluster["authOptions"]["mode"] == "token"
    head = cluster["headGroupSpec"]
    assert head["template"]["spec"]["containers"][0]["image"]
    assert isinstance(head.get("rayStartParams", {}), dict)
    groups = cluster["workerGroupSpecs"]
    assert groups
    for group in groups:
        for key in ("groupName", "minReplicas", "maxReplicas", "template"):
            assert key in group, f"workerGroupSpecs[].{key} is required"
        assert 0 <= group["minReplicas"] <= group.get("replicas", group["minReplicas"]) <= group["maxReplicas"]
        assert all(isinstance(v, str) for v in group.get("rayStartParams", {}).values()), "KubeRay wants strings"
        assert group["template"]["spec"]["containers"][0]["image"]
    gpu = [g for g in groups if container_resources(g["template"])[1] > 0]
    assert gpu, "a GPU worker group"
    tolerations = gpu[0]["template"]["spec"]["tolerations"]
    assert any(t["key"] == "nvidia.com/gpu" and t["operator"] == "Exists" for t in tolerations)


def test_the_rayjob_entrypoint_is_a_valid_sweep_command_for_its_cluster():
    job = yaml.safe_load(RAYJOB.read_text())
    words = shlex.split(job["spec"]["entrypoint"])
    assert words[:3] == ["python", "-m", "stability.sweep"]
    args = parse_args(words[3:])
    assert args.address == "auto" and args.storage.startswith("s3://") and not args.dry_run
    spec = load_spec(args.study, args.assignments)
    groups = processes(spec, plan_trials(spec))
    cluster = job["spec"]["rayClusterSpec"]
    cpus = gpus = 0.0
    for group in cluster["workerGroupSpecs"]:
        c, g = container_resources(group["template"])
        cpus, gpus = cpus + c * group["maxReplicas"], gpus + g * group["maxReplicas"]
    assert slots(spec, cpus, gpus, len(groups)) >= 1, "a trial of the study fits the worker group"
