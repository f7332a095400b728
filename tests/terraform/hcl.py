"""Read terraform/ with python-hcl2 into plain Python: blocks as dicts, literal strings
unquoted, expressions kept as ``${...}`` strings, parser bookkeeping keys dropped."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TERRAFORM = ROOT / "terraform"
MODULES = TERRAFORM / "modules"
ENVS = TERRAFORM / "envs"

_META = {"__is_block__", "__comments__", "__start_line__", "__end_line__", "__inline_comments__"}


def clean(value):
    """python-hcl2 (8.x) output -> plain values: ``'"x"'`` -> ``'x'``; meta keys dropped."""
    if isinstance(value, dict):
        return {clean_key(k): clean(v) for k, v in value.items() if k not in _META}
    if isinstance(value, list):
        return [clean(v) for v in value]
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def clean_key(key: str) -> str:
    """Block labels come quoted (``'"aws_s3_bucket"'``); strip the quotes."""
    return key[1:-1] if len(key) >= 2 and key[0] == key[-1] == '"' else key


def comments(value) -> list[str]:
    """Every ``#`` comment python-hcl2 attached anywhere inside ``value`` (raw output)."""
    found: list[str] = []
    if isinstance(value, dict):
        for k, v in value.items():
            if k == "__comments__":
                found += [c["value"] for c in v]
            else:
                found += comments(v)
    elif isinstance(value, list):
        for v in value:
            found += comments(v)
    return found


@dataclass
class Module:
    """One Terraform root or child module folder, parsed."""

    path: Path
    resources: list[tuple[str, str, dict]] = field(default_factory=list)  # (type, name, body)
    data: list[tuple[str, str, dict]] = field(default_factory=list)
    variables: dict[str, dict] = field(default_factory=dict)
    outputs: dict[str, dict] = field(default_factory=dict)
    locals: dict = field(default_factory=dict)
    modules: dict[str, dict] = field(default_factory=dict)
    raw_comments: list[str] = field(default_factory=list)

    def of_type(self, rtype: str) -> list[tuple[str, dict]]:
        """(name, body) of every resource of ``rtype``."""
        return [(n, b) for t, n, b in self.resources if t == rtype]

    def data_of_type(self, dtype: str) -> list[tuple[str, dict]]:
        """(name, body) of every data source of ``dtype``."""
        return [(n, b) for t, n, b in self.data if t == dtype]


def parse_module(path: Path) -> Module:
    """Parse every ``*.tf`` file in ``path`` (override files excluded)."""
    import hcl2

    mod = Module(path)
    for tf in sorted(path.glob("*.tf")):
        if tf.name.endswith("_override.tf") or tf.name == "override.tf":
            continue
        with tf.open() as f:
            raw = hcl2.load(f)
        mod.raw_comments += comments(raw)
        doc = clean(raw)
        for kind, target in (("resource", mod.resources), ("data", mod.data)):
            for entry in doc.get(kind, []):
                for rtype, named in entry.items():
                    for name, body in named.items():
                        target.append((rtype, name, body))
        for entry in doc.get("variable", []):
            mod.variables.update(entry)
        for entry in doc.get("output", []):
            mod.outputs.update(entry)
        for entry in doc.get("locals", []):
            mod.locals.update(entry)
        for entry in doc.get("module", []):
            mod.modules.update(entry)
    return mod


def module_dirs() -> list[Path]:
    """Every child module folder under terraform/modules."""
    return sorted(p for p in MODULES.iterdir() if p.is_dir())


def env_dirs() -> list[Path]:
    """Every environment (root module) under terraform/envs."""
    return sorted(p for p in ENVS.iterdir() if p.is_dir())


def all_modules() -> dict[str, Module]:
    """Every child module and environment, parsed, by folder name relative to terraform/."""
    return {str(p.relative_to(TERRAFORM)): parse_module(p) for p in module_dirs() + env_dirs()}


_LOCAL_REF = re.compile(r"^\$\{local\.([A-Za-z0-9_]+)\}$")


def resolve_list(value, mod: Module):
    """A list attribute written literally or as ``${local.NAME}`` naming a literal list in
    the module's locals; None where it is any other expression (not statically known)."""
    if isinstance(value, list):
        return value
    if isinstance(value, str):
        m = _LOCAL_REF.match(value)
        if m and isinstance(mod.locals.get(m.group(1)), list):
            return mod.locals[m.group(1)]
    return None


def blocks(body: dict, name: str) -> list[dict]:
    """Nested blocks ``name`` of a resource body, static and ``dynamic "name"`` contents."""
    found = list(body.get(name, []))
    for dyn in body.get("dynamic", []):
        if name in dyn:
            found += dyn[name].get("content", [])
    return found
