"""MLflow experiment tracking that works without a server, is silent where it should be and never kills training.

``ExperimentTracker`` talks to MLflow through an explicit ``MlflowClient`` (no global active run, so
several trainers in one process do not collide). It is a no-op when ``tracking_uri`` is None or when
``enabled`` is False (every process but the main one). Params are flattened (``model.backbone.name``);
metrics are converted to Python floats; images and files become run artifacts. A tracking server that
is unreachable (at the start or mid-run) costs one bounded attempt and one warning; training goes on
without tracking.
"""
from __future__ import annotations

import logging
import os
import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Mapping, Optional, TypeVar, Union
from urllib.parse import urlparse

logger = logging.getLogger(__name__)
T = TypeVar("T")
PARAMS_PER_CALL = 100  # MLflow log_batch limit
METRICS_PER_CALL = 1000
# MLflow's own defaults (7 retries with exponential backoff, 120 s timeout) keep an unreachable server busy
# for minutes; these bound one failing call to a few seconds. A value the user set in the environment wins.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}


@contextmanager
def bounded_http() -> Iterator[None]:
    """Set :data:`HTTP_DEFAULTS` for the variables the user left unset, for the duration of one MLflow call
    (MLflow reads them on every request), then remove them again."""
    added = [name for name in HTTP_DEFAULTS if name not in os.environ]
    for name in added:
        os.environ[name] = HTTP_DEFAULTS[name]
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def flatten_params(tree: Mapping[str, Any], prefix: str = "") -> Dict[str, str]:
    """``{"model": {"backbone": {"name": "resnet18"}}}`` -> ``{"model.backbone.name": "resnet18"}``."""
    flat: Dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            flat[name] = "[" + ", ".join(str(v) for v in value) + "]"
        else:
            flat[name] = str(value)
    return flat


def to_float(value: Any) -> float:
    """Tensor / numpy / Python number -> float (``accelerator.log`` silently drops tensors; we do not)."""
    if hasattr(value, "detach"):
        value = value.detach().float().mean().item()
    elif hasattr(value, "item"):
        value = value.item()
    return float(value)


def default_artifact_location(tracking_uri: str) -> Optional[str]:
    """Artifacts next to a sqlite database (``<db folder>/mlartifacts``) instead of MLflow's ``./mlruns``."""
    parsed = urlparse(tracking_uri)
    if parsed.scheme != "sqlite":
        return None
    db_path = Path(tracking_uri[len("sqlite:///"):])
    return (db_path.parent / "mlartifacts").resolve().as_uri()


_METRIC_CHARS = re.compile(r"[^\w\-. /]")


def metric_name(key: str) -> str:
    """A metric name MLflow accepts (letters, digits, ``_ - . /`` and spaces): ``"val/J&F"`` -> ``"val/J_F"``."""
    return _METRIC_CHARS.sub("_", key)


class ExperimentTracker:
    """One MLflow run: ``log_params``, ``log_metrics``, ``log_image``, ``log_artifact``, ``finish``.

    ``run_id`` continues an existing run (after a resume) instead of creating a new one; metric points at
    steps the continued run already holds (steps re-done after the resume) are not logged again.

    Tracking never stops training: every client call goes through :meth:`_call`, with MLflow's HTTP retries
    and timeout bounded (:data:`HTTP_DEFAULTS`, where the user set none). The first call that fails logs one
    warning and switches tracking off for the rest of the run: later metrics are dropped, not buffered.
    ``error`` holds that failure (None while tracking works).
    """

    def __init__(
        self,
        tracking_uri: Optional[str],
        experiment: str = "selfvos",
        run_name: Optional[str] = None,
        run_id: Optional[str] = None,
        enabled: bool = True,
    ) -> None:
        self.enabled = bool(enabled and tracking_uri)
        self.tracking_uri = tracking_uri
        self.run_id: str = ""
        self.error: Optional[str] = None
        self.status: Optional[str] = None  # set by finish()
        self._client = None
        self._logged_steps: Dict[str, int] = {}  # metric -> highest step the continued run already holds
        if not self.enabled:
            return
        self._client = self._call("connect", _mlflow_client, tracking_uri)
        started = self._call("start the run", self._start, experiment, run_name, run_id)
        self.run_id = started if started is not None else (run_id or "")  # keep the id for a later resume

    def _start(self, experiment: str, run_name: Optional[str], run_id: Optional[str]) -> str:
        """Continue ``run_id`` when the store knows it, else create a run in ``experiment``; returns its id."""
        if run_id and self._continue(run_id):
            self._logged_steps = self._last_steps(run_id)
            return run_id
        found = self._client.get_experiment_by_name(experiment)
        if found is not None:
            experiment_id = found.experiment_id
        else:
            location = default_artifact_location(self.tracking_uri)
            experiment_id = self._client.create_experiment(experiment, artifact_location=location)
        return self._client.create_run(experiment_id, run_name=run_name).info.run_id

    def _continue(self, run_id: str) -> bool:
        """Reopen ``run_id``; False (with a warning) when this tracking store does not know it.

        Any other failure (server unreachable) propagates to :meth:`_call`.
        """
        from mlflow.exceptions import MlflowException

        try:
            self._client.update_run(run_id, status="RUNNING")
        except MlflowException as err:
            if err.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            logger.warning("cannot continue MLflow run %s (%s); starting a new run", run_id, err)
            return False
        return True

    def _last_steps(self, run_id: str) -> Dict[str, int]:
        """Metric name -> the highest step ``run_id`` already holds for it."""
        keys = self._client.get_run(run_id).data.metrics
        return {key: max((m.step for m in self._client.get_metric_history(run_id, key)), default=-1) for key in keys}

    def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Optional[T]:
        """``fn(*args, **kwargs)`` with bounded HTTP retries; on any error: one warning, tracking off, None."""
        if not self.enabled:
            return None
        try:
            with bounded_http():
                return fn(*args, **kwargs)
        except Exception as err:  # tracking must never take the training run down with it
            self._disable(what, err)
            return None

    def _disable(self, what: str, err: BaseException) -> None:
        """Switch tracking off for good, saying so once."""
        self.enabled = False
        self.error = f"{type(err).__name__}: {err}"
        logger.warning(
            "tracking server %s unreachable (could not %s: %s); training continues without tracking, "
            "later metrics are not recorded", self.tracking_uri, what, _shorten(self.error),
        )

    def log_params(self, params: Mapping[str, Any], prefix: str = "") -> None:
        """Log a nested mapping as flattened params; values already logged identically are skipped,
        changed ones (a resume with other settings) are reported and kept as first logged."""
        self._call("log params", self._log_params, params, prefix)

    def _log_params(self, params: Mapping[str, Any], prefix: str) -> None:
        from mlflow.entities import Param

        existing = self._client.get_run(self.run_id).data.params
        flat = flatten_params(params, prefix)
        changed = {k: (existing[k], v) for k, v in flat.items() if k in existing and existing[k] != v}
        if changed:
            logger.warning("MLflow params cannot change within a run; keeping the first values for %s", changed)
        new = [Param(k, v) for k, v in flat.items() if k not in existing]
        for i in range(0, len(new), PARAMS_PER_CALL):
            self._client.log_batch(self.run_id, params=new[i : i + PARAMS_PER_CALL])

    def log_metrics(self, metrics: Mapping[str, Any], step: int) -> None:
        """Log scalars (tensors and numpy numbers become floats) at ``step``; points at steps a continued run
        already holds are skipped."""
        if not self.enabled or not metrics:
            return
        from mlflow.entities import Metric

        now, step = int(time.time() * 1000), int(step)
        batch = [Metric(metric_name(key), to_float(value), now, step) for key, value in metrics.items()]
        batch = [m for m in batch if step > self._logged_steps.get(m.key, -1)]
        for i in range(0, len(batch), METRICS_PER_CALL):
            self._call("log metrics", self._client.log_batch, self.run_id, metrics=batch[i : i + METRICS_PER_CALL])

    def log_image(self, image: Any, artifact_file: str) -> None:
        """Store an image (``(H, W, 3)`` uint8 array or PIL image), e.g. a pseudo-label gallery."""
        if self.enabled:
            self._call("log an image", self._client.log_image, self.run_id, image, artifact_file=artifact_file)

    def log_artifact(self, path: Union[str, Path], artifact_path: Optional[str] = None) -> None:
        """Copy a local file or folder into the run's artifacts."""
        if self.enabled:
            self._call("log an artifact", self._client.log_artifact, self.run_id, str(path),
                       artifact_path=artifact_path)

    def finish(self, status: str = "FINISHED") -> None:
        """Mark the run finished (or ``"FAILED"`` / ``"KILLED"``); only the first call counts."""
        if self.status is not None:
            return
        self.status = status
        if self.enabled:
            self._call("end the run", self._client.set_terminated, self.run_id, status=status)


def _mlflow_client(tracking_uri: str) -> Any:
    """An ``MlflowClient`` for ``tracking_uri`` (raises on a URI scheme MLflow does not know)."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def _shorten(text: str, limit: int = 300) -> str:
    """One line of at most ``limit`` characters (MLflow's connection errors run to several hundred)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
