"""Initialise a backbone from safetensors weights: a local file or a Hugging Face Hub repo id.

``load_backbone_weights(model, source)`` accepts torchvision / timm ResNet state dicts (``fc.*`` is
dropped, everything else must match: strict). For a grey (1-channel) backbone, 3-channel ``conv1``
weights are summed over the RGB axis, which keeps the response to a grey image equal to that of the
RGB network on the same grey value in all three channels. Never pickles; offline never blocks: the Hub
cache is tried first and a missing file is one clear ``SelfvosInputError``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Union

import torch
from torch import nn

from selfvos.errors import SelfvosInputError

HUB_FILENAME = "model.safetensors"
_DROPPED_PREFIXES = ("fc.",)
_STRIPPED_PREFIXES = ("module.", "backbone.")


def resolve_weights_path(source: Union[str, Path]) -> Path:
    """A local ``.safetensors`` path, or ``owner/name`` on the Hub -> the local file to read.

    Local paths (existing, or ending in ``.safetensors``, or starting with ``.``/``/``/``~``) never touch
    the network. A Hub id is looked up in the local cache first; the network is tried only when
    ``HF_HUB_OFFLINE`` is not set.
    """
    text = os.fspath(source)
    path = Path(text).expanduser()
    looks_local = path.exists() or text.endswith(".safetensors") or text.startswith((".", "/", "~"))
    if looks_local:
        if not path.is_file():
            raise SelfvosInputError(path, "weights file not found")
        return path
    from huggingface_hub import hf_hub_download  # heavy import kept local

    try:
        return Path(hf_hub_download(text, HUB_FILENAME, local_files_only=True))
    except Exception:  # not in the cache: fall through to the network unless offline
        pass
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
        raise SelfvosInputError(text, f"{HUB_FILENAME} is not in the local Hugging Face cache and "
                                      "HF_HUB_OFFLINE is set; download it first or pass a local .safetensors path")
    try:
        return Path(hf_hub_download(text, HUB_FILENAME))
    except Exception as err:
        raise SelfvosInputError(text, f"could not download {HUB_FILENAME} from the Hugging Face Hub "
                                      f"({type(err).__name__}: {err})") from None


def read_state_dict(path: Union[str, Path]) -> Dict[str, torch.Tensor]:
    """Read a safetensors file into CPU tensors; a broken file is one clear error."""
    from safetensors.torch import load_file

    try:
        return load_file(os.fspath(path), device="cpu")
    except Exception as err:
        raise SelfvosInputError(path, f"not a readable safetensors file ({type(err).__name__}: {err})") from None


def adapt_state_dict(state: Dict[str, torch.Tensor], in_chans: int) -> Dict[str, torch.Tensor]:
    """Drop classifier keys, strip ``module.``/``backbone.`` prefixes, convert ``conv1`` to ``in_chans``."""
    out: Dict[str, torch.Tensor] = {}
    for key, value in state.items():
        for prefix in _STRIPPED_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
        if key.startswith(_DROPPED_PREFIXES):
            continue
        out[key] = value
    conv1 = out.get("conv1.weight")
    if conv1 is not None and conv1.shape[1] != in_chans:
        if in_chans == 1 and conv1.shape[1] == 3:
            out["conv1.weight"] = conv1.sum(dim=1, keepdim=True)
        elif in_chans == 3 and conv1.shape[1] == 1:
            out["conv1.weight"] = conv1.repeat(1, 3, 1, 1) / 3.0
    return out


def load_backbone_weights(model: nn.Module, source: Union[str, Path]) -> nn.Module:
    """Load ``source`` (local safetensors path or Hub id) into ``model`` strictly apart from ``fc.*``."""
    path = resolve_weights_path(source)
    state = adapt_state_dict(read_state_dict(path), getattr(model, "in_chans", 3))
    expected = {k: v for k, v in model.state_dict().items() if not k.startswith(_DROPPED_PREFIXES)}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise SelfvosInputError(path, f"weights do not match {type(model).__name__}: "
                                      f"missing {missing[:5]}{'...' if len(missing) > 5 else ''} "
                                      f"({len(missing)}), unexpected {unexpected[:5]}"
                                      f"{'...' if len(unexpected) > 5 else ''} ({len(unexpected)})")
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items() if state[k].shape != v.shape]
    if wrong:
        raise SelfvosInputError(path, f"weight shapes do not match: {wrong[:3]}")
    model.load_state_dict(state, strict=False)  # strict check done above; fc.* deliberately left out
    return model
