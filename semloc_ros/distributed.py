"""Map building on a Ray cluster: many sources, one task per chunk of frames, merged as a serial build would.

1. Plan (driver): the sources are loaded as frame lists (paths and bag references, no pixels) and filtered by the
   caller; each source's frames are cut into chunks of ``chunk_frames`` that start where a serial build starts a
   network batch (:func:`chunk_problem`), so the networks see the same batches as in a serial build.
2. Describe (workers): one Ray task per chunk. A worker process builds the pipeline once (one torch thread; the
   GPU when the task was given one) and describes the chunk's frames in every view. A task whose worker dies is
   run again (``max_retries``); a task that raises fails the build with that error.
3. Merge (driver): finished chunks advance the progress bar; once every chunk of a source (and of all the
   sources before it) is in, its views are added to the database, one ``add`` per view as in
   :func:`semloc_ros.mapping.build_database`: the same entries in the same order and the same search index,
   so the saved map has the same bytes as a serial build on the same device (apart from the save time).

Ray is optional: it is imported only here, only when asked for. Network: ``connect("auto")`` starts a cluster
for the run on loopback only (node IP 127.0.0.1, no dashboard, no metrics export, no usage report); a loopback
``ADDRESS`` is joined in the same mode. See docs/scale.md for real clusters.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from semloc_ros.core.database import GeoDatabase
from semloc_ros.io.datasets import Drive, Frame
from semloc_ros.mapping import add_views, describe_drive_views, map_views, wants_thumbnails

DESCRIBE_CHUNK = 64  # frames read and described at a time by semloc_ros.mapping.describe_drive_frames
DEFAULT_CHUNK_FRAMES = 4 * DESCRIBE_CHUNK
DEFAULT_MAX_RETRIES = 3
# Set before ray is imported: a single-node cluster whose servers bind and advertise 127.0.0.1 (without it Ray
# replaces a 127.0.0.1 node address by the machine's network address), and no usage report.
LOOPBACK_ENVIRONMENT = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}


class DistributedError(RuntimeError):
    """Ray is missing, the cluster cannot be reached, or a chunk failed."""


@dataclass(frozen=True)
class PipelineSpec:
    """What a worker needs to build the same pipeline as the driver."""

    method: str
    untrained_ok: bool = False
    mask_dynamic: bool = False
    batch_size: int = 16
    descriptor_file: str | None = None  # a trained descriptor instead of the shipped one (same path on workers)
    segmenter_file: str | None = None  # the user's segmenter (same path on workers)
    label_mapping: str = "identity"
    segmenter_arch: str = ""
    trust_model_code: bool = False

    def build(self, device: str = "cpu"):
        from semloc_ros.models.pipeline import Pipeline

        return Pipeline.from_method(self.method, device=device, untrained_ok=self.untrained_ok,
                                    mask_dynamic=self.mask_dynamic, descriptor_file=self.descriptor_file,
                                    segmenter_file=self.segmenter_file, label_mapping=self.label_mapping,
                                    segmenter_arch=self.segmenter_arch, trust_model_code=self.trust_model_code)


@dataclass
class ChunkResult:
    """One chunk described: ``(V, n, D)`` descriptors and ``(V, n, h, w)`` thumbnails (or None), and where."""

    descriptors: np.ndarray
    thumbnails: np.ndarray | None
    worker: str  # host:pid
    torch_threads: int


@dataclass
class BuildReport:
    """What a distributed build did (for the command's summary)."""

    chunks: int
    frames: int
    workers: set[str]
    torch_threads: set[int]


def is_loopback_address(address: str) -> bool:
    """Whether a Ray ADDRESS (``host:port``, ``ray://host:port`` or ``auto``) stays on this machine."""
    if address == "auto":
        return True
    host = address.removeprefix("ray://").rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def import_ray(loopback: bool):
    """The ray module (DistributedError with one line when it is not installed)."""
    if loopback:
        os.environ.update(LOOPBACK_ENVIRONMENT)
    try:
        import ray
    except ImportError as error:
        raise DistributedError(f"--ray needs the ray package (pip install -r requirements.txt): {error}") from None
    if loopback:
        from ray._private import ray_constants  # no public switch: see LOOPBACK_ENVIRONMENT

        if ray_constants.ENABLE_RAY_CLUSTER:
            raise DistributedError("ray was imported before semloc set its loopback mode; cannot keep it local")
    return ray


@contextlib.contextmanager
def connect(address: str, workers: int | None = None) -> Iterator[Any]:
    """Ray connected for the duration: ``auto`` starts a new loopback cluster with ``workers`` CPUs (all cores by
    default; never one already running here) and stops it afterwards; any other address joins that cluster and
    leaves it running."""
    loopback = is_loopback_address(address)
    ray = import_ray(loopback)
    options: dict[str, Any] = {"configure_logging": False, "log_to_driver": False}
    if address == "auto":
        options.update(address="local", num_cpus=workers or os.cpu_count() or 1, include_dashboard=False,
                       _node_ip_address="127.0.0.1", _system_config={"enable_metrics_collection": False})
    else:
        options["address"] = address
    try:
        ray.init(**options)
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise DistributedError(f"cannot reach the Ray cluster {address!r}: {error}") from None
    try:
        if loopback and ray.util.get_node_ip_address() != "127.0.0.1":
            raise DistributedError(f"the Ray node address is {ray.util.get_node_ip_address()}, not 127.0.0.1")
        yield ray
    finally:
        ray.shutdown()


# ------------------------------------------------------------------------------------------------ workers

_WORKER_PIPELINES: dict[tuple[PipelineSpec, str], Any] = {}


def describe_chunk(spec: PipelineSpec, frames: Sequence[Frame], views: Sequence[float],
                   thumbnails: bool) -> ChunkResult:
    """Step 2 on a worker: the chunk's frames described in each view with this process's pipeline."""
    import socket

    import ray
    import torch

    from semloc_ros.models import set_torch_threads

    device = "cuda" if ray.get_gpu_ids() else "cpu"
    key = (spec, device)
    if key not in _WORKER_PIPELINES:
        set_torch_threads(1)
        _WORKER_PIPELINES[key] = spec.build(device)
    descriptors, small = describe_drive_views(_WORKER_PIPELINES[key], frames, views, batch_size=spec.batch_size,
                                              thumbnails=thumbnails)
    return ChunkResult(descriptors, small, f"{socket.gethostname()}:{os.getpid()}", torch.get_num_threads())


def chunk_problem(chunk_frames: int, batch_size: int) -> str:
    """Why ``chunk_frames`` would split the network batches of a serial build differently ('' if it does not).

    A serial build reads :data:`DESCRIBE_CHUNK` frames at a time and runs them in batches of ``batch_size``;
    a chunk must start on one of those batch starts.
    """
    aligned = chunk_frames % DESCRIBE_CHUNK == 0 or (DESCRIBE_CHUNK % batch_size == 0
                                                     and chunk_frames % batch_size == 0)
    if chunk_frames < 1 or not aligned:
        return (f"chunk frames must be a positive multiple of {DESCRIBE_CHUNK} (or of the batch size when it "
                f"divides {DESCRIBE_CHUNK}), got {chunk_frames}")
    return ""


def chunk_bounds(count: int, chunk_frames: int) -> list[tuple[int, int]]:
    """Step 1: [start, stop) of the chunks of ``count`` frames."""
    return [(start, min(count, start + chunk_frames)) for start in range(0, count, chunk_frames)]


def _merged(chunks: Sequence[ChunkResult]) -> tuple[np.ndarray, np.ndarray | None]:
    """A source's ``(V, N, D)`` descriptors and thumbnails from its chunks (in frame order)."""
    descriptors = np.concatenate([chunk.descriptors for chunk in chunks], axis=1)
    if chunks[0].thumbnails is None:
        return descriptors, None
    return descriptors, np.concatenate([chunk.thumbnails for chunk in chunks], axis=1)


def build_on_ray(
    ray,
    spec: PipelineSpec,
    pipeline,
    drives: Sequence[Drive],
    database: GeoDatabase,
    views: Sequence[float] | None = None,
    thumbnails: bool | None = None,
    chunk_frames: int = DEFAULT_CHUNK_FRAMES,
    max_retries: int = DEFAULT_MAX_RETRIES,
    progress: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
) -> BuildReport:
    """Add every frame of ``drives`` (in order) to ``database`` by describing them on the connected cluster.

    ``views`` and ``thumbnails`` as in :func:`semloc_ros.mapping.build_database`. ``pipeline`` is the driver's
    own (for the database's model and the thumbnail choice); workers build theirs from ``spec``.
    ``on_progress(frames done, frames total)`` is called as chunks finish.
    """
    from tqdm import tqdm

    problem = chunk_problem(chunk_frames, spec.batch_size)
    if problem:
        raise ValueError(problem)
    views = map_views(database, views)
    with_thumbnails = wants_thumbnails(pipeline, database, thumbnails)
    gpu = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    task = ray.remote(num_cpus=1, num_gpus=gpu, max_retries=max_retries)(describe_chunk)
    pending = {}
    for source, drive in enumerate(drives):  # step 1
        for number, (start, stop) in enumerate(chunk_bounds(len(drive), chunk_frames)):
            ref = task.remote(spec, drive.frames[start:stop], views, with_thumbnails)
            pending[ref] = (source, number, stop - start)
    per_source = [len(chunk_bounds(len(d), chunk_frames)) for d in drives]
    results: list[dict[int, ChunkResult]] = [{} for _ in drives]
    report = BuildReport(len(pending), sum(len(d) for d in drives), set(), set())
    done_frames, next_source = 0, 0
    with tqdm(total=report.frames, desc="describe (ray)", unit="img", disable=not progress) as bar:
        while pending:
            finished, _ = ray.wait(list(pending), num_returns=1)
            for ref in finished:  # step 2 done for one chunk
                source, number, count = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayError as error:
                    raise DistributedError(f"{drives[source].source or drives[source].name}: chunk {number} "
                                           f"failed: {_first_line(error)}") from None
                results[source][number] = result
                report.workers.add(result.worker)
                report.torch_threads.add(result.torch_threads)
                done_frames += count
                bar.update(count)
                bar.set_postfix(workers=len(report.workers))
                if on_progress is not None:
                    on_progress(done_frames, report.frames)
            while next_source < len(drives) and len(results[next_source]) == per_source[next_source]:  # step 3
                chunks = [results[next_source][n] for n in range(per_source[next_source])]
                if chunks:
                    add_views(database, drives[next_source].frames, views, *_merged(chunks))
                results[next_source] = {}
                next_source += 1
    return report


def _first_line(error: BaseException) -> str:
    """The last line naming the cause of a Ray task error (Ray wraps the remote traceback)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__



def read_source_list(path: str | os.PathLike[str]) -> list[str]:
    """The sources of a manifest file: one per line (a path, bag or ``semloc-sim:ROOT:DRIVE``), ``#`` starts a
    comment, blank lines are skipped; relative paths are relative to the manifest's folder."""
    from pathlib import Path

    manifest = Path(path)
    sources = []
    for line in manifest.read_text(encoding="utf-8").splitlines():
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        if not entry.startswith("semloc-sim:") and not Path(entry).expanduser().is_absolute():
            entry = str(manifest.parent / entry)
        sources.append(str(Path(entry).expanduser()) if not entry.startswith("semloc-sim:") else entry)
    return sources
