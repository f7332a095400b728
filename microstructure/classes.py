"""The class table of a label map for microstructure analysis: which value is which class and
what role each class plays (mount, pore or phase).

Roles (issue 14): ``mount`` = the mounting medium or background (epoxy): outside the pellet
outline, or open porosity where it lies inside it (epoxy fills open pores when a section is
mounted); ``pore`` = closed porosity (pores the epoxy did not reach); ``phase`` = a solid phase
(magnetite, hematite, slag, ...). Read from a ``classes:`` list in the ``dataset.yaml`` form
(:func:`load_class_table`) or from a model package's class dicts (:func:`classes_from_mappings`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROLES = ("mount", "pore", "phase")


@dataclass(frozen=True)
class ClassInfo:
    """One class of a label map.

    Attributes:
        name: Class name (e.g. ``magnetite``), unique in a table.
        value: Pixel value of the class in the label map (0-255, uint8), unique in a table.
        role: ``"mount"``, ``"pore"`` or ``"phase"`` (default).
        colour: Display colour (R, G, B), 0-255 each, or None.

    Raises:
        ValueError: empty name, value outside 0..255, unknown role or bad colour (the message
            names the class).
    """

    name: str
    value: int
    role: str = "phase"
    colour: tuple[int, int, int] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"class name {self.name!r} must be a non-empty string")
        if isinstance(self.value, bool) or not isinstance(self.value, int) or not 0 <= self.value <= 255:
            raise ValueError(f"class {self.name!r}: value {self.value!r} must be an integer in 0..255")
        if self.role not in ROLES:
            raise ValueError(f"class {self.name!r}: role {self.role!r} must be one of "
                             f"{', '.join(ROLES)}")
        if self.colour is not None:
            c = tuple(self.colour)
            if len(c) != 3 or any(isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 255
                                  for v in c):
                raise ValueError(f"class {self.name!r}: colour {self.colour!r} must be three "
                                 "integers in 0..255")
            object.__setattr__(self, "colour", c)


def classes_from_mappings(items: Sequence[Mapping[str, Any]]) -> list[ClassInfo]:
    """Class table from dicts: ``{name, value, role?, colour?}`` (the ``dataset.yaml`` form).

    Also accepted, so that model packages' ``model.json`` classes and ``dataset.yaml`` files
    read as they are: ``index`` for ``value`` (the label map value of a model's class),
    ``rgb``/``color`` for ``colour``, and ``pellet: false`` for ``role: mount`` when no role
    is given.

    Args:
        items: One mapping per class, any order.

    Returns:
        The classes, in the given order.

    Raises:
        ValueError: not a list of mappings, an entry without name or value, an invalid field
            (the message names the entry, the key and the value), or duplicate names or values.
    """
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence) or not items:
        raise ValueError(f"classes must be a non-empty list of {{name, value, role}} entries, "
                         f"got {items!r}")
    out: list[ClassInfo] = []
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise ValueError(f"classes[{i}] must be a mapping with name, value and role, got {item!r}")
        name = item.get("name")
        if name is None:
            raise ValueError(f"classes[{i}]: key 'name' is missing")
        value = item.get("value", item.get("index"))
        if value is None:
            raise ValueError(f"classes[{i}] ({name!r}): key 'value' is missing")
        role = item.get("role")
        if role is None:
            role = "mount" if item.get("pellet", True) is False else "phase"
        colour = item.get("colour", item.get("color", item.get("rgb")))
        if colour is not None:
            if not isinstance(colour, (list, tuple)):
                raise ValueError(f"classes[{i}] ({name!r}): key 'colour' must be [R, G, B], got {colour!r}")
            colour = tuple(colour)
        try:
            out.append(ClassInfo(name=name, value=value, role=role, colour=colour))
        except ValueError as e:
            raise ValueError(f"classes[{i}]: {e}") from None
    for key in ("name", "value"):
        seen: dict[Any, int] = {}
        for i, c in enumerate(out):
            v = getattr(c, key)
            if v in seen:
                raise ValueError(f"classes[{i}]: {key} {v!r} is already used by classes[{seen[v]}]")
            seen[v] = i
    return out


def load_class_table(path: str | Path) -> list[ClassInfo]:
    """Read a class table from a YAML file holding a ``classes:`` list (the ``dataset.yaml``
    form: ``- {name: epoxy, value: 0, role: mount, colour: [40, 40, 40]}``).

    Raises:
        ValueError: the file is missing, not YAML, has no ``classes`` list, or an entry is
            invalid (see :func:`classes_from_mappings`); the message names the file.
    """
    import yaml  # the base install's CLI reads class tables; imported only here

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ValueError(f"{path}: cannot read the class table ({e.strerror or e})") from None
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, Mapping) or "classes" not in data:
        raise ValueError(f"{path}: expected a mapping with a 'classes:' list "
                         "(each entry name, value, role: mount | pore | phase)")
    try:
        return classes_from_mappings(data["classes"])
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
