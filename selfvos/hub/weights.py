"""Weights as safetensors: tied-tensor aware saving and a strict load that reports every problem at once.

safetensors refuses tensors that share memory. A model with tied weights (one ``nn.Parameter`` registered
under two names) has several ``state_dict`` keys that are views of the same storage; we store each tied
group once, under its first name, and record the other names in the file's metadata. Loading fills every
name of a group from whichever name the file holds, so a file written by another naming of the same tie
still loads.

Loading never unpickles anything: ``safetensors.torch.load_file`` reads raw tensors only. Weights holding
NaN or inf (a diverged run) are refused on load unless ``allow_nonfinite=True`` (:func:`first_nonfinite`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Iterable, List, NamedTuple, Optional, Tuple

import torch
from torch import nn

from selfvos.atomic import apply_default_mode
from selfvos.errors import NonFiniteWeightsError, SelfvosInputError

WEIGHTS_NAME = "model.safetensors"
_ALIASES_KEY = "selfvos.tied"  # metadata: JSON {dropped_name: kept_name}
_FORMAT_KEY = "format"  # "pt", as transformers / PyTorchModelHubMixin write it


def _view_key(tensor: torch.Tensor) -> Tuple[object, ...]:
    """Two state-dict entries with the same key are the same view of the same memory (tied weights)."""
    if tensor.device.type == "meta":
        return ("meta", id(tensor))
    return (
        tensor.device,
        tensor.untyped_storage().data_ptr(),
        tensor.storage_offset(),
        tuple(tensor.shape),
        tuple(tensor.stride()),
        tensor.dtype,
    )


class NonFinite(NamedTuple):
    """A tensor holding NaN or inf: its name and counts; ``str`` is ``"head.weight (3 NaN, 0 inf of 8 values)"``."""

    name: str
    nans: int
    infs: int
    numel: int

    def __str__(self) -> str:
        return f"{self.name} ({self.nans} NaN, {self.infs} inf of {self.numel} values)"


def first_nonfinite(named: Iterable[Tuple[str, torch.Tensor]]) -> Optional[NonFinite]:
    """The first floating-point tensor of ``(name, tensor)`` pairs holding NaN or inf; None when all are finite.

    One device synchronisation for all tensors (a per-tensor flag is stacked first), so it is cheap on a GPU.
    """
    floats = [(name, t.detach()) for name, t in named if torch.is_tensor(t) and t.is_floating_point() and t.numel()]
    if not floats:
        return None
    by_device: Dict[torch.device, List[int]] = {}
    for i, (_, tensor) in enumerate(floats):
        by_device.setdefault(tensor.device, []).append(i)
    bad: List[int] = []
    for indices in by_device.values():
        flags = torch.stack([~torch.isfinite(floats[i][1]).all() for i in indices])
        bad += [indices[j] for j in flags.nonzero().flatten().tolist()]
    if not bad:
        return None
    name, tensor = floats[min(bad)]
    return NonFinite(name, int(torch.isnan(tensor).sum()), int(torch.isinf(tensor).sum()), tensor.numel())


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)


def tied_groups(state_dict: Dict[str, torch.Tensor]) -> List[List[str]]:
    """Names grouped by identical tensor views, in ``state_dict`` order; singleton groups included."""
    groups: Dict[Tuple[object, ...], List[str]] = {}
    for name, tensor in state_dict.items():
        groups.setdefault(_view_key(tensor), []).append(name)
    return list(groups.values())


def save_weights(model: nn.Module, path: Path) -> Dict[str, str]:
    """Write ``model``'s state dict to ``path`` as safetensors; returns ``{dropped_alias: kept_name}``.

    Tied tensors are stored once. Tensors that merely overlap another tensor's memory (a view of a slice)
    are copied so the file holds independent, contiguous tensors.
    """
    state = model.state_dict()
    aliases: Dict[str, str] = {}
    tensors: Dict[str, torch.Tensor] = {}
    for group in tied_groups(state):
        kept = group[0]
        for other in group[1:]:
            aliases[other] = kept
        tensors[kept] = state[kept].detach()
    storages: Dict[Tuple[object, int], int] = {}
    for tensor in tensors.values():
        key = (tensor.device, tensor.untyped_storage().data_ptr())
        storages[key] = storages.get(key, 0) + 1
    out: Dict[str, torch.Tensor] = {}
    for name, tensor in tensors.items():
        shared = storages[(tensor.device, tensor.untyped_storage().data_ptr())] > 1
        tensor = tensor.to("cpu")
        out[name] = tensor.clone().contiguous() if shared or not tensor.is_contiguous() else tensor
    from safetensors.torch import save

    metadata = {_FORMAT_KEY: "pt", _ALIASES_KEY: json.dumps(aliases, sort_keys=True)}
    with open(path, "wb") as fh:
        fh.write(canonical_safetensors(save(out, metadata=metadata)))
    apply_default_mode(path)  # the usual permissions, as config.json beside it
    return aliases


def canonical_safetensors(data: bytes) -> bytes:
    """safetensors file bytes with the header's metadata keys sorted, so that the same tensors and metadata give
    the same bytes (and SHA-256) in every process: safetensors writes the metadata in hash-map order, which
    changes from one process to the next. The header keeps its length (padded with spaces, as the format allows)."""
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + length])
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    if len(text) > length:  # cannot happen for a reordering; keep the original rather than corrupt it
        return data
    return data[:8] + text.ljust(length, b" ") + data[8 + length:]


def read_weights(path: Path) -> Dict[str, torch.Tensor]:
    """Tensors of a safetensors file on the CPU; a missing or corrupted file is a ``SelfvosInputError``."""
    if not path.is_file():
        raise SelfvosInputError(path, "weights file not found (expected a safetensors file)")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise SelfvosInputError(path, f"not a readable safetensors file ({err})") from None


def load_weights(model: nn.Module, path: Path, *, strict: bool = True,
                 allow_nonfinite: bool = False) -> Tuple[List[str], List[str]]:
    """Copy the tensors of ``path`` into ``model``; returns ``(missing_keys, unexpected_keys)``.

    A file holding NaN or inf values is a :class:`NonFiniteWeightsError` naming the first such tensor,
    unless ``allow_nonfinite`` (e.g. to inspect a diverged run).

    Shape mismatches are always an error (there is no sensible partial copy). With ``strict=True``
    missing or unexpected keys are an error too; the one ``SelfvosInputError`` lists all of them.
    A tied group counts as present when the file holds any of its names; a file holding several names of
    a group with different values cannot be loaded faithfully (reported; with ``strict=False`` the first
    name wins and the others are returned as unexpected).
    """
    stored = read_weights(path)
    if not allow_nonfinite:
        bad = first_nonfinite(stored.items())
        if bad is not None:
            raise NonFiniteWeightsError(
                path, f"non-finite weights: {bad}; saved from a diverged run? "
                "(pass allow_nonfinite=True to load them anyway)", tensor=bad.name,
            )
    expected = model.state_dict()
    to_load: Dict[str, torch.Tensor] = {}
    missing: List[str] = []
    untied: List[str] = []  # tied in the model, different tensors in the file: only one can be kept
    for group in tied_groups(expected):
        present = [name for name in group if name in stored]
        if not present:
            missing.extend(group)
            continue
        source = present[0]
        untied += [name for name in present[1:] if not _same(stored[name], stored[source])]
        for name in group:
            to_load[name] = stored[source]
    known = set(expected)
    unexpected = sorted(name for name in stored if name not in known) + untied
    mismatched = [
        f"{name}: file {tuple(tensor.shape)} vs model {tuple(expected[name].shape)}"
        for name, tensor in to_load.items()
        if tuple(tensor.shape) != tuple(expected[name].shape)
    ]
    problems = []
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatch(es): " + "; ".join(mismatched))
    if strict and missing:
        problems.append(f"{len(missing)} missing key(s): " + ", ".join(missing))
    if strict and len(unexpected) > len(untied):
        extra = unexpected[: len(unexpected) - len(untied)]
        problems.append(f"{len(extra)} unexpected key(s): " + ", ".join(extra))
    if strict and untied:
        problems.append(f"{len(untied)} key(s) tied in the model but different in the file: " + ", ".join(untied))
    if problems:
        raise SelfvosInputError(
            path, f"weights do not fit {type(model).__name__} -> " + " | ".join(problems)
        )
    model.load_state_dict(to_load, strict=False)
    return missing, unexpected
