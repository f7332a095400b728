"""Training checkpoints without pickle: tensors in safetensors files, everything else in JSON.

A checkpoint folder holds, after epoch ``e``:

- ``model-e{e}.safetensors``: the current weights (float32);
- ``best-e{e}.safetensors``: the weights of the best epoch so far;
- ``optimizer-e{e}.safetensors``: the optimiser's per-parameter tensors (AdamW's step,
  exp_avg, exp_avg_sq), keyed ``{param_id}.{name}``;
- ``rng-e{e}.safetensors``: torch's CPU (and CUDA) generator states;
- ``state.json``: epoch, config, history, best score and epoch, the optimiser's param_groups,
  the LR scheduler's and AMP GradScaler's state dicts, numpy's bit-generator state, and the
  sha256 of each tensor file.

``state.json`` is written last and atomically (``os.replace``), so a run killed at any moment
leaves the previous complete checkpoint; older epoch files are deleted afterwards.

Why resume is safe: loading reads only ``json.loads`` and ``safetensors.torch.load_file`` (a
JSON header plus raw little-endian tensor bytes, no code); ``torch.load`` / pickle is never
called, so a checkpoint from untrusted storage cannot run code. The sha256 check catches
truncated or altered tensor files (it is an integrity check, not a signature).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from models.package import sha256_file
from training.errors import TrainingError

STATE_JSON = "state.json"
FORMAT = 1


class CheckpointError(TrainingError):
    """A checkpoint is missing, corrupt, or was written by a different training configuration."""


def _flatten_optimizer(sd: dict) -> tuple[dict, dict]:
    """Optimizer state_dict -> (tensors {"pid.name": tensor}, JSON part)."""
    import torch

    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{pid}.{k}"] = v.detach().contiguous().cpu()
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict, meta: dict, device) -> dict:
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        pid, name = key.split(".", 1)
        # AdamW keeps "step" on the CPU unless capturable/fused; the rest lives with the params.
        state.setdefault(int(pid), {})[name] = v if name == "step" else v.to(device)
    for key, v in meta["scalars"].items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    return {"state": state, "param_groups": meta["param_groups"]}


def _rng_tensors() -> dict:
    import torch

    out = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"cuda_{i}"] = s
    return out


def _restore_rng(tensors: dict) -> None:
    import torch

    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("cuda_")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


def _cpu_state(state_dict: dict) -> dict:
    import torch

    return {k: v.detach().contiguous().cpu() for k, v in state_dict.items()
            if isinstance(v, torch.Tensor)}


def save_checkpoint(folder: str | Path, *, epoch: int, config: dict, model, optimizer,
                    scheduler, scaler, np_rng, best_state: dict, extra: dict[str, Any],
                    averaged=None) -> Path:
    """Write the checkpoint of the end of ``epoch`` (see the module docstring).

    Args:
        config: Training configuration; :func:`load_checkpoint` refuses a different one.
        model, optimizer, scheduler, scaler: torch objects (scaler: ``torch.amp.GradScaler``).
        np_rng: The numpy Generator of the patch sampler.
        best_state: state_dict of the best weights so far.
        extra: JSON-able run state (history, best score, elapsed time...).
        averaged: The run's weight average (:class:`training.averaging.WeightAverage`), if any.

    Returns:
        Path of ``state.json``.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
    parts = {"model": _cpu_state(model.state_dict()), "best": _cpu_state(best_state),
             "optimizer": opt_tensors, "rng": _rng_tensors()}
    if averaged is not None:
        parts["averaged"] = _cpu_state(averaged.state_dict())
    files = {}
    for name, tensors in parts.items():
        fname = f"{name}-e{epoch}.safetensors"
        save_file(tensors, str(folder / fname))
        files[name] = {"file": fname, "sha256": sha256_file(folder / fname)}
    state = {"format": FORMAT, "epoch": epoch, "config": config, "files": files,
             "optimizer": opt_meta, "scheduler": scheduler.state_dict(),
             "scaler": scaler.state_dict(), "numpy_rng": np_rng.bit_generator.state,
             "extra": extra}
    tmp = folder / f"{STATE_JSON}.tmp"
    tmp.write_text(json.dumps(state, indent=1))
    os.replace(tmp, folder / STATE_JSON)
    keep = {f["file"] for f in files.values()}
    for old in folder.glob("*-e*.safetensors"):
        if old.name not in keep:
            old.unlink(missing_ok=True)
    return folder / STATE_JSON


def read_state(folder: str | Path) -> dict | None:
    """The parsed ``state.json`` of a checkpoint folder, or None if there is none.

    Raises:
        CheckpointError: ``state.json`` exists but is not valid JSON of a known format.
    """
    path = Path(folder) / STATE_JSON
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: unreadable checkpoint state: {e}") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a pelletseg checkpoint of format {FORMAT}")
    return state


def load_checkpoint(folder: str | Path, *, config: dict, model, optimizer, scheduler, scaler,
                    np_rng, device, averaged=None) -> tuple[dict, dict]:
    """Restore a checkpoint written by :func:`save_checkpoint` into the given objects
    (``averaged``: the run's weight average, restored too when given).

    Returns:
        (state, best_state): the parsed ``state.json`` and the best weights' state_dict.

    Raises:
        CheckpointError: no checkpoint, a tensor file missing or failing its sha256, or a
            ``config`` that differs from the checkpoint's (the differing keys are named);
            ``averaged`` given but the checkpoint holds no weight average.
    """
    from safetensors.torch import load_file

    folder = Path(folder)
    state = read_state(folder)
    if state is None:
        raise CheckpointError(f"{folder}: no checkpoint to resume ({STATE_JSON} is missing)")
    saved = state["config"]
    diff = sorted(k for k in set(saved) | set(config) if saved.get(k) != config.get(k))
    if diff:
        detail = ", ".join(f"{k}: {saved.get(k)!r} -> {config.get(k)!r}" for k in diff)
        raise CheckpointError(f"{folder}: the checkpoint was written with other training "
                              f"settings ({detail}); resume with the same ones or start anew")
    tensors = {}
    for name, entry in state["files"].items():
        path = folder / entry["file"]
        if not path.is_file() or sha256_file(path) != entry["sha256"]:
            raise CheckpointError(f"{path}: missing or sha256 mismatch; the checkpoint is "
                                  "corrupt: start anew without --resume")
        tensors[name] = load_file(str(path))
    model.load_state_dict(tensors["model"], strict=True)
    optimizer.load_state_dict(_unflatten_optimizer(tensors["optimizer"], state["optimizer"],
                                                   device))
    scheduler.load_state_dict(state["scheduler"])
    if state["scaler"]:
        scaler.load_state_dict(state["scaler"])
    np_rng.bit_generator.state = state["numpy_rng"]
    _restore_rng(tensors["rng"])
    if averaged is not None:
        if "averaged" not in tensors:
            raise CheckpointError(f"{folder}: the checkpoint holds no weight average; resume "
                                  "with the settings it was written with or start anew")
        averaged.load_state_dict(tensors["averaged"])
    return state, tensors["best"]
