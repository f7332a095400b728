"""The exported graph of a model package: an ONNX file derived from the package's network,
cached on local disk per weights sha256 and export recipe, rebuilt when missing, and never
used without its checksum.

Layout under the cache folder (``PELLETSEG_EXPORT_CACHE_DIR``, default
``PELLETSEG_CACHE_DIR/exported``, for workers)::

    {weights_sha256}/{recipe_key}/model.onnx       the graph (ONNX, weights embedded)
    {weights_sha256}/{recipe_key}/manifest.json    sha256 of model.onnx, weights sha256, recipe
    {weights_sha256}/{recipe_key}/.lock            one exporter at a time across processes

``recipe_key`` is a hash of how the graph was made (:func:`export_recipe`: exporter, opset,
torch version, batch norms folded or not), so a new torch or a changed recipe exports anew
instead of trusting an old file. A graph is used only if its manifest names this package's
weights and the file's sha256 equals the manifest's; otherwise it is exported again (logged
``exported.rebuild`` with the reason). Files are written to a temporary name and renamed
(atomic), the manifest last.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import structlog
import torch
from filelock import FileLock

from models.package import ModelPackage, sha256_file

__all__ = ["ONNX_OPSET", "ExportError", "export_recipe", "exported_graph", "module_of"]

log = structlog.get_logger(__name__)

#: ONNX opset of exported graphs (supported by onnxruntime >= 1.14 and OpenVINO >= 2023).
ONNX_OPSET = 17
GRAPH_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"


class ExportError(RuntimeError):
    """The network could not be exported to a graph (the message says why)."""


def export_recipe(folded: bool, members: int = 1) -> dict:
    """How a graph is made; part of its cache key.

    Args:
        folded: Whether the exported module has its batch norms folded into its convolutions.
        members: The package's networks (an ensemble's graph also holds how their outputs
            are combined, :func:`worker.engine.ensemble.combine_logits`; absent for one).
    """
    recipe = {"format": "onnx", "opset": ONNX_OPSET, "exporter": "torch.onnx (TorchScript)",
              "torch": torch.__version__, "batchnorm_folded": folded,
              "input": "(N, 3, H, W) float32 normalised tiles, N/H/W dynamic",
              "output": "(N, C, H, W) float32 logits"}
    if members > 1:
        recipe["ensemble"] = {"members": members,
                              "combine": "log mean softmax, element-wise log-sum-exp"}
    return recipe


def _key(recipe: dict) -> str:
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def _check(folder: Path, package: ModelPackage, recipe: dict) -> str | None:
    """None if the cached graph in ``folder`` can be used, else why not."""
    graph, manifest = folder / GRAPH_FILE, folder / MANIFEST_FILE
    if not graph.exists() or not manifest.exists():
        return "missing"
    try:
        meta = json.loads(manifest.read_text())
    except (OSError, json.JSONDecodeError) as e:
        return f"unreadable manifest: {e}"
    if meta.get("weights_sha256") != package.weights_sha256 or meta.get("recipe") != recipe:
        return "manifest names other weights or another recipe"
    actual = sha256_file(graph)
    if actual != meta.get("sha256"):
        return f"sha256 mismatch: file {actual[:16]}..., manifest {str(meta.get('sha256'))[:16]}..."
    return None


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".part")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _export(model: torch.nn.Module, package: ModelPackage, target: str) -> None:
    x = torch.zeros((1, package.in_channels, 64, 64), dtype=torch.float32)
    dynamic = {0: "n", 2: "h", 3: "w"}
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(model, (x,), target, input_names=["tiles"], output_names=["logits"],
                          dynamic_axes={"tiles": dynamic, "logits": dynamic},
                          opset_version=ONNX_OPSET, dynamo=False, do_constant_folding=True)


def module_of(model: torch.nn.Module | Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """``model``, or the network it builds where it is a function (a package's network is
    built on demand: :attr:`worker.engine.segmenter.Segmenter.model`)."""
    return model if isinstance(model, torch.nn.Module) else model()


def exported_graph(model: torch.nn.Module | Callable[[], torch.nn.Module], package: ModelPackage,
                   cache_dir: str | Path, *, folded: bool) -> Path:
    """Path of the package's ONNX graph in ``cache_dir``, exported now if missing or invalid.

    Args:
        model: The package's network in eval mode, on the CPU or not (a copy in float32
            NCHW on the CPU is exported; ``model`` itself is not changed), or a function
            returning it, called only when the graph must be exported.
        package: Its ``model.json`` (``weights_sha256`` keys the cache).
        cache_dir: Folder of exported graphs (created).
        folded: Whether ``model``'s batch norms are folded (part of the recipe).

    Returns:
        Path of ``model.onnx``, whose sha256 was just checked against its manifest.

    Raises:
        ExportError: the export failed or its result fails its own checksum.
        ModelPackageError: the network, built here to export, does not fit its weights.
    """
    import copy

    recipe = export_recipe(folded, package.members)
    folder = Path(cache_dir) / package.weights_sha256 / _key(recipe)
    folder.mkdir(parents=True, exist_ok=True)
    graph = folder / GRAPH_FILE
    with FileLock(str(folder / ".lock")):  # several workers of one machine: export once
        reason = _check(folder, package, recipe)
        if reason is None:
            return graph
        log.info("exported.rebuild", model=package.name, version=package.version,
                 folder=str(folder), reason=reason)
        cpu = copy.deepcopy(module_of(model)).to("cpu", memory_format=torch.contiguous_format)
        cpu = cpu.float().eval()
        try:
            _atomic_write(graph, lambda tmp: _export(cpu, package, tmp))
        except Exception as e:
            raise ExportError(f"model {package.name} {package.version}: export to ONNX failed: "
                              f"{type(e).__name__}: {e}") from e
        manifest = {"sha256": sha256_file(graph), "weights_sha256": package.weights_sha256,
                    "model": package.name, "version": package.version, "recipe": recipe}
        _atomic_write(folder / MANIFEST_FILE,
                      lambda tmp: Path(tmp).write_text(json.dumps(manifest, indent=2) + "\n"))
        reason = _check(folder, package, recipe)
        if reason is not None:
            raise ExportError(f"{graph}: the graph just exported fails its check ({reason})")
    return graph
