"""Ray for the batch runner and the Uni3D evaluation: start or join a cluster, run functions as one-GPU tasks.
Below both commands, so neither imports the other."""
from __future__ import annotations

import os
import sys

from .pack import PACK_ROOT, load_pack

GeoDreamError = load_pack().geodream_ops.errors.GeoDreamError
# Ray reads this when it is imported: off, a Ray started here takes 127.0.0.1 as its address and binds only there.
LOOPBACK_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def require_ray():
    try:
        import ray
    except ImportError:
        raise GeoDreamError("batch runs need Ray: pip install -r requirements-batch.txt (from the pack's folder)") \
            from None
    return ray


def connect(address: str | None = None, worker_setup: str | None = None, **init_kwargs):
    """Start Ray on this machine (``address`` None; loopback only) or join the cluster at ``address``. Workers get
    this pack on their import path; ``worker_setup`` ("module.function") runs in every worker before its first
    job. ``init_kwargs`` go to ``ray.init`` (num_cpus, object_store_memory, ...). Returns the ray module."""
    if address is None and "ray" not in sys.modules:
        os.environ.setdefault(LOOPBACK_ONLY, "0")
    ray = require_ray()
    path = os.pathsep.join(p for p in (str(PACK_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    runtime_env = {"env_vars": {"PYTHONPATH": path}}
    if worker_setup:
        runtime_env["worker_process_setup_hook"] = worker_setup
    init_kwargs.setdefault("include_dashboard", False)
    ray.init(address=address, runtime_env=runtime_env, **init_kwargs)
    return ray


def as_task(ray, function, retries: int, cpus: int = 1):
    """``function`` as a Ray task: one GPU when the cluster has any, retried ``retries`` times when its worker dies
    (an exception raised inside is the task's own fault and is never retried)."""
    gpus = 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0
    return ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=retries, retry_exceptions=False)(function)


def parallel_slots(ray) -> int:
    """How many one-GPU tasks (one-CPU tasks on a cluster without GPUs) run at once on the connected cluster."""
    resources = ray.cluster_resources()
    return max(1, int(resources.get("GPU", 0)) or int(resources.get("CPU", 1)))


def map_tasks(function, calls: list[tuple], retries: int = 2) -> list:
    """``[function(*args) for args in calls]``, each call a Ray task on the connected cluster, in order."""
    ray = require_ray()
    task = as_task(ray, function, retries)
    return ray.get([task.remote(*args) for args in calls])
