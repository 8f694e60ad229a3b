"""MLflow experiment tracking that works without a server and is silent where it should be.

``ExperimentTracker`` talks to MLflow through an explicit ``MlflowClient`` (no global active run, so
several trainers in one process do not collide). It is a no-op when ``tracking_uri`` is None or when
``enabled`` is False (every process but the main one). Params are flattened (``model.backbone.name``);
metrics are converted to Python floats; images and files become run artifacts.
"""
from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union
from urllib.parse import urlparse

logger = logging.getLogger(__name__)
PARAMS_PER_CALL = 100  # MLflow log_batch limit
METRICS_PER_CALL = 1000


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

    ``run_id`` continues an existing run (after a resume) instead of creating a new one.
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
        self._client = None
        if not self.enabled:
            return
        from mlflow import MlflowClient

        self._client = MlflowClient(tracking_uri=tracking_uri)
        if run_id and self._continue(run_id):
            return
        found = self._client.get_experiment_by_name(experiment)
        if found is not None:
            experiment_id = found.experiment_id
        else:
            location = default_artifact_location(tracking_uri)
            experiment_id = self._client.create_experiment(experiment, artifact_location=location)
        self.run_id = self._client.create_run(experiment_id, run_name=run_name).info.run_id

    def _continue(self, run_id: str) -> bool:
        """Reopen ``run_id``; False (with a warning) when this tracking store does not know it."""
        from mlflow.exceptions import MlflowException

        try:
            self._client.update_run(run_id, status="RUNNING")
        except MlflowException as err:
            logger.warning("cannot continue MLflow run %s (%s); starting a new run", run_id, err)
            return False
        self.run_id = run_id
        return True

    def log_params(self, params: Mapping[str, Any], prefix: str = "") -> None:
        """Log a nested mapping as flattened params; values already logged identically are skipped,
        changed ones (a resume with other settings) are reported and kept as first logged."""
        if not self.enabled:
            return
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
        """Log scalars (tensors and numpy numbers become floats) at ``step``."""
        if not self.enabled or not metrics:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(metric_name(key), to_float(value), now, int(step)) for key, value in metrics.items()]
        for i in range(0, len(batch), METRICS_PER_CALL):
            self._client.log_batch(self.run_id, metrics=batch[i : i + METRICS_PER_CALL])

    def log_image(self, image: Any, artifact_file: str) -> None:
        """Store an image (``(H, W, 3)`` uint8 array or PIL image), e.g. a pseudo-label gallery."""
        if self.enabled:
            self._client.log_image(self.run_id, image, artifact_file=artifact_file)

    def log_artifact(self, path: Union[str, Path], artifact_path: Optional[str] = None) -> None:
        """Copy a local file or folder into the run's artifacts."""
        if self.enabled:
            self._client.log_artifact(self.run_id, str(path), artifact_path=artifact_path)

    def finish(self, status: str = "FINISHED") -> None:
        """Mark the run finished (or ``"FAILED"`` / ``"KILLED"``)."""
        if self.enabled:
            self._client.set_terminated(self.run_id, status=status)
