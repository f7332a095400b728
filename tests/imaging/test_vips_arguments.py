"""No libvips call in the source passes an argument that this libvips marks deprecated (such
as ``strip`` of ``tiffsave``/``pngsave``/``jpegsave``, replaced by ``keep`` in libvips 8.15):
deprecated arguments log a warning in every worker and may go in a later libvips.

The deprecated arguments come from libvips itself (its operation introspection); the source
is read with :mod:`ast`: keyword arguments of calls to savers, loaders and ``write_to_*``,
and the keys of option dicts passed to them (``TILED_TIFF``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pyvips = pytest.importorskip("pyvips")
from pyvips.voperation import _DEPRECATED, Introspect  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["api", "benchmarks", "cli", "core", "datasets", "imaging", "microstructure", "models",
            "queues", "storage", "submission", "training", "webhooks", "worker"]
SAVERS = ["tiffsave", "pngsave", "jpegsave", "dzsave", "vipssave", "webpsave"]
LOADERS = ["tiffload", "pngload", "jpegload", "vipsload", "openslideload"]
#: Option names that mark a dict literal as libvips save options.
SAVE_OPTION_KEYS = {"compression", "bigtiff", "tile", "pyramid", "Q", "keep"}


def deprecated(op: str) -> set[str]:
    """Argument names of libvips operation ``op`` flagged deprecated; empty if it is absent."""
    try:
        details = Introspect.get(op).details
    except pyvips.Error:
        return set()
    return {name for name, d in details.items() if d["flags"] & _DEPRECATED}


def deprecated_table() -> dict[str, set[str]]:
    table = {op: deprecated(op) for op in SAVERS + LOADERS + ["thumbnail", "thumbnail_image"]}
    for op in SAVERS:
        table[f"{op}_buffer"] = deprecated(f"{op}_buffer") or table[op]
    every_saver = set().union(*(table[s] for s in SAVERS))
    every_loader = set().union(*(table[s] for s in LOADERS))
    table["write_to_file"] = table["write_to_buffer"] = every_saver
    table["new_from_file"] = table["new_from_buffer"] = every_loader
    table["thumbnail_buffer"] = table["thumbnail"]
    # dict literals of options: TIFF/PNG/JPEG ones (dzsave's own deprecated names, such as
    # tile_width, are current tiffsave arguments)
    table["<save options dict>"] = table["tiffsave"] | table["pngsave"] | table["jpegsave"]
    return table


def offences(source: str, filename: str, table: dict[str, set[str]]) -> list[str]:
    """``file:line op(name=...)`` for every deprecated argument found in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            bad = table.get(name, set())
            found += [f"{filename}:{node.lineno} {name}({kw.arg}=...)"
                      for kw in node.keywords if kw.arg in bad]
        elif isinstance(node, ast.Dict):
            keys = {k.value for k in node.keys if isinstance(k, ast.Constant)}
            if keys & SAVE_OPTION_KEYS:
                found += [f"{filename}:{node.lineno} save options {{{k!r}: ...}}"
                          for k in sorted(keys & table["<save options dict>"], key=str)]
    return found


def test_libvips_reports_the_deprecated_strip_argument():
    table = deprecated_table()
    assert "strip" in table["tiffsave"] and "strip" in table["pngsave"]
    assert "keep" not in table["tiffsave"]  # the replacement (libvips >= 8.15)


def test_the_scanner_finds_deprecated_arguments():
    table = deprecated_table()
    source = ('im.tiffsave("a.tif", strip=True)\n'
              'TILED = {"tile": True, "bigtiff": True, "strip": True}\n'
              'im.write_to_buffer(".png", compression=4, keep="none")\n')
    found = offences(source, "x.py", table)
    assert found == ["x.py:1 tiffsave(strip=...)", "x.py:2 save options {'strip': ...}"]


def test_no_deprecated_libvips_arguments_in_the_source():
    table = deprecated_table()
    files = [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))]
    assert len(files) > 50
    found = [o for p in files
             for o in offences(p.read_text(), str(p.relative_to(ROOT)), table)]
    assert not found, found
