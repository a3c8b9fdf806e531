"""`snnc eval --workers N`: the batches of images as Ray tasks, on this machine or on an existing Ray cluster.

Images are independent, so each batch (read, letterbox, ANN, rate limit, simulation at every T, decoding) is one
Ray task returning its partial results (`run.BatchResult`: detections, activity counts, examples); the driver
merges them in image order, so every metric equals the single-process run's. At most N tasks run at a time, each
with one CPU and one simulator thread; one progress bar counts the finished images. The network and the set are
put into Ray's object store once; a worker process keeps the network, its ANN session and the fan-out maps of the
activity figures between tasks. The per-layer error analysis stays in the single-process run.

Local (default): `ray.init(num_cpus=N)` starts a private Ray instance for the evaluation and stops it afterwards.
Cluster: `--ray-address ray://head:10001` (or `auto` on a node of the cluster) connects to a running cluster; its
nodes need snnc (with the same version) installed and the dataset at the same path (docs/evaluation.md).
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from typing import Any, Iterator, Sequence

import numpy as np

from snnc.ir.errors import SnncError

log = logging.getLogger(__name__)

INSTALL = "pip install 'snnc[ray]'"
LOCAL_OBJECT_STORE = 512 * 1024**2  # the network and the set once, plus the results in flight: small


def require_ray() -> Any:
    """The ray module, or SnncError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise SnncError(f"--workers needs Ray, which is not installed: {INSTALL}") from None
    return ray


def check_workers(workers: Any) -> None:
    if workers is not None and (not isinstance(workers, int) or isinstance(workers, bool) or workers < 1):
        raise SnncError(f"--workers {workers}: expected a positive number of worker processes")


def _start(ray: Any, workers: int, address: str | None) -> bool:
    """Connect to (address) or start (local) Ray; True when this call started it and must stop it."""
    if ray.is_initialized():
        return False
    common = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR}
    try:
        if address:
            ray.init(address=address, **common)
        else:
            ray.init(num_cpus=workers, object_store_memory=LOCAL_OBJECT_STORE, **common)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"--ray-address {address}" if address else "a local Ray instance"
        raise SnncError(f"cannot start or reach {where}: {str(exc).splitlines()[0]}") from None
    return True


# ---- the worker side -------------------------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}  # job id -> (net, evset, backend, ann runner, fan-out maps), the latest job only


def _worker_state(job: str, refs: list, with_ann: bool) -> tuple:
    if _WORKER.get("job") != job:
        import ray

        from snnc.compiler.energy import fanout_maps
        from snnc.evaluation.ann import AnnRunner

        net, evset = ray.get(refs[0]), ray.get(refs[1])
        ann = AnnRunner(net.ann_onnx, [net.output_names.get(o, o) for o in net.outputs]) if with_ann else None
        _WORKER.clear()
        _WORKER.update(job=job, state=(net, evset, ann, fanout_maps(net)))
    return _WORKER["state"]


def _batch_task(job: str, refs: list, idx: list[int], ts: list[int], cfg: Any, cmap: np.ndarray,
                names: Sequence[str], with_ann: bool, analysis: bool, v_init: float | None) -> Any:
    from snnc.backends import get_backend
    from snnc.evaluation.activity import Activity
    from snnc.evaluation.run import run_batch
    from snnc.ir.ort import set_default_threads

    set_default_threads(cfg.threads)  # the ANN's and the host graph's sessions too: this worker's share of cores
    net, evset, ann, maps = _worker_state(job, refs, with_ann)
    backend = get_backend(cfg.backend)
    record = analysis and "record_layers" in backend.extra_options
    activity = Activity(net, ts, maps=maps)
    part = run_batch(net, evset, idx, ts, cfg, cmap, names, backend=backend, ann=ann, activity=activity,
                     errors=None, record=record, analysis=analysis, v_init=v_init)
    part.activity = activity
    return part


# ---- the driver side -------------------------------------------------------------------------------------------

def run_batches(net: Any, evset: Any, batches: list[list[int]], ts: list[int], cfg: Any, cmap: np.ndarray,
                names: Sequence[str], *, with_ann: bool, analysis: bool, v_init: float | None,
                label: str = "SNN") -> Iterator[Any]:
    """Run every batch as a Ray task on cfg.workers workers; yield the BatchResults in batch order."""
    from tqdm.auto import tqdm

    check_workers(cfg.workers)
    ray = require_ray()
    started = _start(ray, cfg.workers, cfg.ray_address)
    task = ray.remote(num_cpus=1, max_retries=0)(_batch_task)
    # one simulator thread per task: N tasks share N cores; no bars in the workers (the driver shows one)
    wcfg = dataclasses.replace(cfg, threads=cfg.threads or 1, progress=False)
    # Tasks in flight: on the private instance (N CPUs) one more per worker waits in Ray's queue, so a worker
    # starts its next batch at once instead of idling while the driver takes a result in and submits; Ray still
    # runs at most N at a time. On a cluster (more CPUs than N) exactly N, the stated limit.
    in_flight = 2 * cfg.workers if started else cfg.workers
    job = uuid.uuid4().hex
    refs = [ray.put(net), ray.put(evset)]
    bar = tqdm(total=sum(len(b) for b in batches), desc=f"{label} T={ts[-1]} ({cfg.workers} Ray workers)",
               unit="img", disable=(None if cfg.progress is None else not cfg.progress))
    done: dict[int, Any] = {}
    pending: dict[Any, int] = {}
    nxt = 0  # next batch to submit
    out = 0  # next batch to yield
    try:
        while out < len(batches):
            while nxt < len(batches) and len(pending) < in_flight:
                ref = task.remote(job, refs, batches[nxt], ts, wcfg, cmap, list(names), with_ann, analysis, v_init)
                pending[ref] = nxt
                nxt += 1
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                k = pending.pop(ref)
                done[k] = _get(ray, ref)
                bar.update(len(batches[k]))
            while out in done:
                yield done.pop(out)
                out += 1
    finally:
        bar.close()
        for ref in pending:
            ray.cancel(ref, force=True)
        if started:
            ray.shutdown()


def _get(ray: Any, ref: Any) -> Any:
    """ray.get, with an snnc error raised in a worker passed on as the same one-line SnncError."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, SnncError):
            raise SnncError(str(cause)) from None
        raise
