"""What the CLI checks before a run starts, and how it words failures of the machine.

A run that will fail should fail in a second with one message, exit 2, before Prefect starts
(:func:`refusal`; what needs no torch and no file's contents first, :func:`quick_refusal`): the
device must exist, every split must load and an image folder's files must be images, every class
must hold the real images synthesis picks from it, a teacher weights file must be a state dict
that fits the teacher's architecture, imported images must fit the data set, an export target
must not exist and its folder must be writable, the artifact root must be writable and a
configured Prefect API must answer. Disk-level failures met mid-run
(full, read-only) are reworded to name the root and the fix; finished stages are untouched,
since every file is written to a temporary name and renamed into place.
"""

from __future__ import annotations

import errno
import logging
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from storage.locations import is_local_root, unusable_root

if TYPE_CHECKING:
    from flows.config import DistilleryConfig
    from tasks.data import ImageSource

DISK_ERRORS = {errno.ENOSPC: "is full", errno.EDQUOT: "is over its quota", errno.EROFS: "is read-only",
               errno.EACCES: "is not writable by this user", errno.EPERM: "is not writable by this user"}


class PreflightError(RuntimeError):
    """The run cannot start; the message names the problem and the fix."""


def refusal(config: DistilleryConfig, *, export_to: Path | None = None) -> str | None:
    """Why a run of ``config`` (an export to ``export_to``) would fail at once, as one message;
    None when it may start. Checked before the Prefect server starts, not minutes in: first what
    needs neither torch nor a file's contents (:func:`quick_refusal`, well under the 5 s torch takes
    to import), then the files themselves."""
    return quick_refusal(config, export_to=export_to) or _thorough_refusal(config)


def quick_refusal(config: DistilleryConfig, *, export_to: Path | None = None) -> str | None:
    """The refusals found without torch: no GPU driver for ``--device cuda``, a missing data folder, an
    export target that exists or cannot be made, an artifact root that cannot be written, a Prefect API
    that does not answer."""
    from tasks.data.config import missing_root
    from tasks.export import ExportError  # no torch: its tensor work imports torch when called
    from tasks.runtime_config import CUDA_MISSING, no_gpu_driver

    if config.runtime.device == "cuda" and no_gpu_driver():
        return CUDA_MISSING
    if config.runtime.task_runner == "dask" and config.runtime.artifact_root.startswith("memory://"):
        return (f"artifact root {config.runtime.artifact_root} lives in this process's memory, which Dask workers "
                "cannot reach; give a folder or an s3:// root with --task-runner dask")
    if why := missing_root(config.data):
        return f"data: {why}"
    try:
        if export_to is not None:
            check_export(config, export_to)
        check_artifact_root(config.runtime.artifact_root)
        check_prefect_api()
    except (ExportError, PreflightError) as err:
        return str(err)
    return None


def _thorough_refusal(config: DistilleryConfig) -> str | None:
    """The refusals that read files (every split loads, image headers, the weights against the
    architecture, imported images) or ask torch (a CUDA device is visible)."""
    from tasks.data import DataError
    from tasks.data.class_folders import check_import
    from tasks.pretrained import WeightsError
    from tasks.runtime import DeviceError, resolve_device
    from tasks.stages.synthesize.config import SynthesisError

    try:
        resolve_device(config.runtime)
        test = check_data(config)
        check_class_sizes(config)
        if config.teacher.weights is not None:
            check_weights(config, test)
        if config.synthesis.mode == "imported":
            check_import(config.data, root=config.synthesis.import_root, ipc=config.synthesis.ipc,
                         resize=config.synthesis.import_resize)
    except DataError as err:
        return f"data: {err}"
    except (WeightsError, DeviceError, SynthesisError) as err:
        return str(err)
    return None


def check_data(config: DistilleryConfig) -> ImageSource:
    """The test split must load; an image folder's every split too, and its files must be images
    (headers, and a JPEG's end marker, :func:`tasks.data.decode.check_readable`). The test split, as
    the teacher sees it. Array data sets (Fashion-MNIST, CIFAR) are read whole by their loader: their
    test split is checked."""
    from tasks.data import has_validation, load_split
    from tasks.data.decode import check_readable
    from tasks.pretrained import pretrained_input

    data = pretrained_input(config.data, config.teacher.weights)
    test = load_split(data, "test")
    if data.name == "imagefolder":
        for split in ("train", *(("val",) if has_validation(data) else ())):
            check_readable(load_split(data, split).paths)  # an empty class folder is a DataError here
        check_readable(test.paths)
    return test


def check_class_sizes(config: DistilleryConfig, read: dict[str, tuple[int, dict[str, int]]] | None = None) -> None:
    """Every class of the training split must hold the real images synthesis picks from it (random
    real, selection, recovery from real images): SynthesisError naming the class and the fix. Reads
    the training split only for those modes; ``read`` keeps each data config's (image size, class
    sizes) across calls, so a grid's points read it once."""
    from tasks.data import class_sizes, load_split
    from tasks.pretrained import pretrained_input
    from tasks.stages.synthesize.config import check_real_images, real_images_needed

    if not real_images_needed(config.synthesis):
        return
    data = pretrained_input(config.data, config.teacher.weights)
    read = {} if read is None else read
    if (key := data.model_dump_json()) not in read:
        train = load_split(data, "train")
        read[key] = train.image_size, class_sizes(train)
    image_size, sizes = read[key]
    check_real_images(config.synthesis, image_size=image_size, class_sizes=sizes,
                      train_per_class=config.data.train_per_class)


def grid_refusal(config: DistilleryConfig, grids: list[dict[str, list[str]]]) -> str | None:
    """Why a point of a sweep's or report's grids would fail at once (a class with fewer training
    images than the point's synthesis picks), named with the point's settings; :func:`refusal` has
    checked the base config. Reads each distinct data set once."""
    from flows.config import grid_points, split_point, with_overrides
    from tasks.stages.synthesize.config import SynthesisError

    read: dict[str, tuple[int, dict[str, int]]] = {}
    for grid in grids:
        for point in grid_points(grid):
            settings = split_point(point, 1)[0]
            try:
                check_class_sizes(with_overrides(config, settings), read)
            except SynthesisError as err:
                return f"grid point {' '.join(f'{k}={v}' for k, v in settings.items())}: {err}"
    return None


def check_weights(config: DistilleryConfig, source: ImageSource) -> None:
    """The teacher weights file must hold a state dict that fits ``teacher.model`` on ``source``'s images."""
    from tasks.models import build_teacher
    from tasks.pretrained import load_weights, read_state_dict, weights_file

    weights = str(config.teacher.weights)
    load_weights(build_teacher(config.teacher, source), read_state_dict(weights_file(weights), origin=weights),
                 origin=weights, model_name=config.teacher.model)


def check_export(config: DistilleryConfig, dest: Path) -> None:
    """Refusals found before anything runs: an existing target, one whose folder cannot be written, or a
    config that stores no soft labels."""
    from tasks.export import ExportError, check_export_target

    if config.evaluate.labels != "soft" or config.evaluate.train_set != "distilled":
        raise ExportError("export writes the images and the soft-label store students train on; this config "
                          f"trains on evaluate.labels={config.evaluate.labels}, evaluate.train_set="
                          f"{config.evaluate.train_set}: remove those settings")
    check_export_target(dest)
    if why := unwritable(str(dest.parent), keep=False):  # the export makes it; a refusal that follows leaves nothing
        raise ExportError(f"export target {dest} cannot be made: its folder {dest.parent} {why}; give --to a "
                          "folder you can write")


def check_artifact_root(root: str) -> None:
    """Write a probe file in ``root`` (made for the probe and removed again: a refusal that follows
    leaves no folder behind); a remote root gets a probe object."""
    if not is_local_root(root):
        if why := unusable_root(root):
            raise PreflightError(why)
        return
    if why := unwritable(root.removeprefix("file://"), keep=False):
        raise PreflightError(f"artifact root {root} {why}; choose another with --artifact-root "
                             "or $DISTILLERY_HOME")


def unwritable(folder: str, *, keep: bool = True) -> str | None:
    """None when ``folder`` (created if needed) takes a file, else why not, as a phrase. With
    ``keep=False`` the folders the probe made are removed again, so a later refusal leaves nothing."""
    probe = os.path.join(folder, f".write-probe-{uuid.uuid4().hex[:8]}")
    made = [] if keep else _missing_folders(folder)
    try:
        os.makedirs(folder, exist_ok=True)
        with open(probe, "wb") as handle:
            handle.write(b"ok")
        os.remove(probe)
    except OSError as err:
        if blocking := _file_in_the_way(folder):
            return ("is a file, not a folder" if blocking == os.path.abspath(folder)
                    else f"is inside {blocking}, a file, not a folder")
        return DISK_ERRORS.get(err.errno or 0, f"cannot be written ({err.strerror or err})")
    finally:
        for path in made:
            try:
                os.rmdir(path)  # deepest first; stops being possible once another process wrote there
            except OSError:
                break
    return None


def _file_in_the_way(folder: str) -> str | None:
    """``folder`` itself or the nearest of its ancestors that exists, when that is not a folder."""
    path = os.path.abspath(folder)
    while not os.path.lexists(path) and path != os.path.dirname(path):
        path = os.path.dirname(path)
    return path if os.path.lexists(path) and not os.path.isdir(path) else None


def _missing_folders(folder: str) -> list[str]:
    """``folder`` and its ancestors that do not exist yet, deepest first."""
    missing, path = [], os.path.abspath(folder)
    while not os.path.exists(path) and path != os.path.dirname(path):
        missing.append(path)
        path = os.path.dirname(path)
    return missing


def api_answers(url: str, *, timeout: float = 5.0) -> str | None:
    """None when the Prefect API at ``url`` answers its health check, else why not (one phrase)."""
    import httpx

    try:
        httpx.get(f"{url.rstrip('/')}/health", timeout=timeout).raise_for_status()
    except httpx.HTTPError as err:
        return f"{type(err).__name__}: {err}"
    return None


def check_prefect_api(timeout: float = 5.0) -> None:
    """When PREFECT_API_URL is set, its health endpoint must answer (no URL: a temporary server)."""
    url = os.environ.get("PREFECT_API_URL", "").rstrip("/")
    if url and (why := api_answers(url, timeout=timeout)):
        raise PreflightError(f"the Prefect API at {url} does not answer ({why}); start it "
                             "(`prefect server start`) or unset PREFECT_API_URL to use a temporary local server")


def describe_os_error(err: OSError, root: str) -> str | None:
    """A disk failure met mid-run as one sentence naming the root, or None for other errors."""
    why = DISK_ERRORS.get(err.errno or 0)
    if why is None:
        return None
    return (f"the artifact root {root} {why} ({err.strerror}); finished stages are kept. Free space or choose "
            "another --artifact-root, then rerun the same command to resume")


class _WithoutTraceback(logging.Formatter):
    """Formats like ``inner`` but leaves the exception out (the record keeps it for other handlers)."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text
        record.exc_info, record.exc_text = None, None
        try:
            return self.inner.format(record)
        finally:
            record.exc_info, record.exc_text = saved


def quiet_tracebacks() -> None:
    """Terminal logs without tracebacks (the CLI prints one message; --debug shows them all).

    Only stream handlers are changed: the Prefect API handler still sends the traceback to
    the dashboard. ``import prefect`` alone installs no handler: Prefect sets its logging up when
    ``prefect.main`` is first imported, which in a fresh process happens only once a flow runs. So it
    is imported here; later set-up calls are incremental (levels only) and keep these formatters.
    """
    import prefect.main  # noqa: F401 - installs Prefect's terminal handlers

    loggers = [logging.getLogger()] + [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)]
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler.formatter, _WithoutTraceback):
                handler.setFormatter(_WithoutTraceback(handler.formatter or logging.Formatter()))
