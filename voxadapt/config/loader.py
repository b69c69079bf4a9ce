"""Reading configs: YAML (strict: duplicate keys are errors) bound to the schema's dataclasses.

Unknown keys, wrong types and impossible values are errors naming the file and the dotted key,
never silent defaults. `--set a.b=value` overrides (run.sh options become such overrides).
A config saved by the recipe (in an experiment or a package) carries `schema_version`; keys
renamed since its version are translated before binding (voxadapt/compat.py), so old packages
keep loading.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

from voxadapt.compat import SCHEMA_VERSION, renamed_to, upgrade_config
from voxadapt.config.schema import Config
from voxadapt.errors import ConfigError

T = TypeVar("T")
_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(tp: Any, value: Any, key: str, source: str) -> Any:
    origin, args = get_origin(tp), get_args(tp)
    bad = ConfigError(f"{source}: {key}: expected {_type_name(tp)}, got {value!r}")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, key, source)
            except ConfigError:
                continue
        raise bad
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{source}: {key}: must be one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if origin in (list, Sequence, tuple):
        if not isinstance(value, (list, tuple)):
            raise bad
        inner = args[0] if args else Any
        return [_coerce(inner, v, f"{key}.{i}", source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise bad
        return {str(k): _coerce(args[1], v, f"{key}.{k}", source) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, source, prefix=f"{key}.")
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if tp is float:
        if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
            return float(value)  # YAML 1.1 reads '2e-5' (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad
        return value
    raise ConfigError(f"{source}: {key}: unsupported type {_type_name(tp)}")


def from_dict(cls: type[T], data: Any, source: str, prefix: str = "") -> T:
    """Build dataclass `cls` from a mapping, with errors naming `source` and the dotted key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {prefix.rstrip('.') or 'top level'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    for key in data:
        if key not in names:
            if renamed := renamed_to(f"{prefix}{key}"):
                new, version = renamed
                raise ConfigError(f"{source}: '{prefix}{key}' was renamed '{new}' (config schema {version}); "
                                  "use the new name")
            raise ConfigError(
                f"{source}: unknown key '{prefix}{key}' (keys allowed here: {', '.join(names)})"
            )
    kwargs = {k: _coerce(hints[k], v, f"{prefix}{k}", source) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ValueError as err:
        raise ConfigError(f"{source}: {prefix.rstrip('.') or 'config'}: {err}") from None


def _set_dotted(tree: dict, dotted: str, value: Any, source: str, defaults: Any = None) -> None:
    """Set a.b.c (list items by number: train.phases.0.epochs) in a raw config tree.

    A section the tree lacks is first copied from `defaults`, so '--set train.phases.0.lr=1'
    edits the default phase list and '--set augment.weights.music=0' keeps the other weights.
    """
    keys = dotted.split(".")
    node: Any = tree
    for i, k in enumerate(keys):
        last = i == len(keys) - 1
        if isinstance(node, list):
            if not k.isdigit() or int(k) >= len(node):
                raise ConfigError(f"{source}: cannot set '{dotted}': '{k}' is not an item of a {len(node)}-item list")
            k = int(k)
        elif not isinstance(node, dict):
            raise ConfigError(f"{source}: cannot set '{dotted}': '{keys[i - 1]}' is not a section")
        if last:
            node[k] = value
            return
        if isinstance(node, dict) and k not in node:
            fallback = defaults.get(k) if isinstance(defaults, dict) else None
            node[k] = copy.deepcopy(fallback) if fallback is not None else ([] if keys[i + 1].isdigit() else {})
        defaults = (defaults[k] if isinstance(defaults, list) and isinstance(k, int) and k < len(defaults)
                    else defaults.get(k) if isinstance(defaults, dict) else None)
        node = node[k]


def parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ConfigError(f"--set {text}: write overrides as key.path=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def _deep_merge(base: dict, over: dict) -> dict:
    """Mappings merge key by key; anything else (lists included) in `over` replaces."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error (PyYAML
    keeps the last silently, so a config edited by appending would hide the first setting)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if isinstance(key, (str, int, float, bool)) and key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key '{key}' given twice (first on line {seen[key] + 1})", key_node.start_mark)
        if isinstance(key, (str, int, float, bool)):
            seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """A config file with its 'base:' chain resolved (paths relative to the including file)."""
    if not path.is_file():
        where = f" (base of {seen[-1]})" if seen else ""
        raise ConfigError(f"{path}: config file not found{where}; pass an existing file with --config (see conf/)")
    if path.resolve() in seen:
        raise ConfigError(f"{path}: 'base:' includes itself in a loop")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text; save the config as UTF-8") from None
    try:
        loaded = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        problem = " ".join(str(getattr(err, "problem", None) or err).split())
        if isinstance(err, yaml.constructor.ConstructorError) and "given twice" in problem:
            raise ConfigError(f"{path}{line}: {problem}; keep one of them") from None
        raise ConfigError(f"{path}{line}: not valid YAML ({problem}); fix the syntax") from None
    if loaded is None:
        raise ConfigError(f"{path}: empty config; give at least 'name:' and the sections you change, "
                          "or start it with 'base: mhfa_tiny.yaml' (see conf/)")
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    raw = loaded
    _translate(raw, str(path))  # before merging: an old file's keys meet its base's new ones
    base = raw.pop("base", None)
    if base is None:
        return raw
    if not isinstance(base, str):
        raise ConfigError(f"{path}: base must be a path to another config")
    return _deep_merge(_read_yaml(path.parent / base, (*seen, path.resolve())), raw)


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> Config:
    """Read a YAML config (None: all defaults) and apply `key.path=value` overrides.

    A config may start with 'base: other.yaml': the other file is read first and this one's
    mappings merge into it (lists and values replace). Configs the recipe saved carry
    `schema_version`; keys renamed since that version are translated. A config without it
    (written by hand, or saved before versions existed) may use old names: they are translated
    with a warning."""
    source = str(path) if path else "<defaults>"
    raw: dict = _read_yaml(Path(path)) if path else {}
    defaults = to_dict(Config()) if overrides else None
    for text in overrides:
        key, value = parse_override(text)
        _set_dotted(raw, key, value, f"{source} (--set {text})", defaults)
    return from_dict(Config, raw, source)


def _translate(raw: dict, source: str) -> None:
    """One config file's keys renamed since its `schema_version` (popped), in place."""
    version = raw.pop("schema_version", None)
    if version is not None and (not isinstance(version, int) or not 1 <= version <= SCHEMA_VERSION):
        raise ConfigError(f"{source}: schema_version {version!r} is not one this voxadapt reads "
                          f"(1 to {SCHEMA_VERSION}); upgrade voxadapt or re-make the file")
    upgrade_config(raw, version, source)


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def dump_yaml(cfg: Config) -> str:
    """The config as the recipe saves it, stamped with the schema version it follows."""
    return yaml.safe_dump({"schema_version": SCHEMA_VERSION, **to_dict(cfg)}, sort_keys=False)


def get_dotted(cfg: Any, dotted: str) -> Any:
    node = cfg
    for part in dotted.split("."):
        if not hasattr(node, part):
            raise ConfigError(f"no config key '{dotted}'")
        node = getattr(node, part)
    return node
