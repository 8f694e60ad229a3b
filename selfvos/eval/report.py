"""Reports of a DAVIS evaluation: a console table, the JSON document and a per-sequence J/F bar plot.

JSON schema (values in [0, 1], decay may be negative)::

    {"sequences": {seq: {"J", "F", "J_recall", "J_decay", "F_recall", "F_decay"}},
     "mean": {"J", "F", "JF"},
     "objects": {"<seq>_<id>": {...same keys...}}   # multi-object evaluations only
     "protocol": "official" | "all", "multi_object": bool,
     "missing_as_empty": bool,                      # were frames without a prediction allowed
     "missing_frames": {"count": int, "sequences": {seq: [frame names]}}}   # those scored as empty masks

Files are written atomically; an ``OSError`` (a full disk) names the file.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Union

from selfvos.atomic import atomic_write_bytes, atomic_write_json
from selfvos.atomic import naming_path
from selfvos.eval.davis import DatasetResult

PathLike = Union[str, "os.PathLike[str]"]
SEQUENCE_KEYS = ("J", "F", "J_recall", "J_decay", "F_recall", "F_decay")


def to_dict(result: DatasetResult) -> Dict[str, object]:
    """The JSON document of an evaluation (plain floats)."""
    doc: Dict[str, object] = {
        "sequences": {name: seq.summary() for name, seq in result.sequences.items()},
        "mean": result.mean(),
    }
    if result.multi_object:
        doc["objects"] = {key: obj.summary() for key, obj in result.objects().items()}
    doc["protocol"] = result.protocol
    doc["multi_object"] = result.multi_object
    doc["missing_as_empty"] = result.missing_as_empty
    doc["missing_frames"] = {"count": result.missing_count, "sequences": result.missing_frames()}
    return doc


def write_json(result: DatasetResult, path: PathLike) -> Path:
    """Write ``to_dict(result)`` to ``path`` atomically (parent folders created); returns the path."""
    with naming_path(path):
        return atomic_write_json(path, to_dict(result), sort_keys=False, newline=True)


def missing_summary(result: DatasetResult) -> str:
    """One line counting the frames scored as empty for lack of a prediction ("" when none)."""
    missing = result.missing_frames()
    if not missing:
        return ""
    per_sequence = ", ".join(f"{seq} {len(frames)}" for seq, frames in missing.items())
    return (f"{result.missing_count} frame(s) without a prediction scored as empty masks "
            f"(--missing-as-empty) in {len(missing)} sequence(s): {per_sequence}")


def format_table(result: DatasetResult) -> str:
    """Fixed-width table: one row per sequence (J&F, J mean/recall/decay, F mean/recall/decay) and the mean.

    The mean row follows the official definition (over objects); its recall and decay are averaged the
    same way.
    """
    header = ("Sequence", "J&F", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")
    rows: List[List[str]] = []
    for name, seq in result.sequences.items():
        s = seq.summary()
        rows.append([name, _fmt((s["J"] + s["F"]) / 2)] + [_fmt(s[k]) for k in
                     ("J", "J_recall", "J_decay", "F", "F_recall", "F_decay")])
    objects = [o.summary() for o in result.objects().values()]
    avg = {k: sum(o[k] for o in objects) / len(objects) for k in SEQUENCE_KEYS}
    mean = result.mean()
    rows.append(["Mean", _fmt(mean["JF"])] + [_fmt(avg[k]) for k in
                ("J", "J_recall", "J_decay", "F", "F_recall", "F_decay")])
    width = max(len(header[0]), *(len(r[0]) for r in rows))
    line = lambda cells: "  ".join([cells[0].ljust(width)] + [c.rjust(8) for c in cells[1:]])  # noqa: E731
    rule = "-" * len(line(list(header)))
    kind = "multi-object" if result.multi_object else "single-object"
    n_obj = f", {len(objects)} objects" if result.multi_object else ""
    body = [line(list(header)), rule] + [line(r) for r in rows[:-1]] + [rule, line(rows[-1])]
    summary = f"J&F {mean['JF']:.4f}   J {mean['J']:.4f}   F {mean['F']:.4f}"
    title = f"DAVIS evaluation ({kind}, protocol {result.protocol}, {len(result.sequences)} sequences{n_obj})"
    return "\n".join([title] + body + [summary])


def _fmt(value: float) -> str:
    return f"{value:.4f}"


def plot_sequences(result: DatasetResult, path: PathLike) -> Path:
    """Grouped bar plot of per-sequence J and F means (PNG via the Agg backend, written atomically); returns
    the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(result.sequences)
    summaries = [result.sequences[n].summary() for n in names]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.5 * len(names) + 2), 4.0))
    ax.bar(x - 0.2, [s["J"] for s in summaries], 0.4, label="J (region)")
    ax.bar(x + 0.2, [s["F"] for s in summaries], 0.4, label="F (boundary)")
    mean = result.mean()
    ax.axhline(mean["JF"], color="black", linestyle="--", linewidth=1, label=f"mean J&F {mean['JF']:.3f}")
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=45, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("score")
    ax.set_title(f"DAVIS per-sequence J / F (protocol {result.protocol})")
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    path = Path(path)
    try:
        with naming_path(path):
            atomic_write_bytes(path, lambda fh: fig.savefig(fh, format="png", dpi=100))
    finally:
        plt.close(fig)
    return path
