"""Outputs of older versions: the one place that says how their configs, fingerprints and weights
read today (docs/reliability.md, "Outputs of older versions").

Three tables, one rule each:
* `RENAMED`: config keys renamed, by the schema version that renamed them. A saved config
  (`schema_version` in it) and a hand-written one are translated before binding; stage markers'
  and checkpoints' fingerprints hold config sections under their section names and are translated
  the same way.
* `ADDED`: fingerprint keys added after outputs were made, with the value that reproduces what
  those outputs did. A key at that value counts as absent, so an output made before the key
  existed and one made since at that value are the same; any other value is a change.
* `RENAMED_WEIGHTS`: parameter-name prefixes of the speaker model renamed with the config keys, so
  old state dicts (model.safetensors, adapters, checkpoints) load into today's modules.

A leaf module (no voxadapt imports): the low-level file I/O that checks markers uses it without
importing the config package.
"""

from __future__ import annotations

import json
import logging
from typing import Any

log = logging.getLogger(__name__)

# version -> {old dotted key: new dotted key} for the keys that version renamed
RENAMED: dict[int, dict[str, str]] = {2: {"augment.aug_prob": "augment.probability"},
                                      3: {"model.backend": "model.pooling"}}
SCHEMA_VERSION = max(RENAMED)
# Under the names fingerprints keep them: a config section ("model", "scoring", "loader"), a
# training phase ("phase"), or a stage's own top-level key (stage 6's "binary": Kaldi text files).
ADDED: dict[str, Any] = {"model.subcenters": 1, "phase.inter_topk": 0, "phase.inter_margin": 0.0,
                         "scoring.calibration_qmf": False, "synthetic.test_utts_per_speaker": 0,
                         "phase.dropadapt.max_utts": 0, "phase.cnn_grad_scale": 0.0,
                         "phase.train_embedding": True, "phase.layer_decay_from": "top", "phase.layerdrop": 0.0,
                         "model.pooling.token_positions": "none", "scoring.asnorm_cohort": "",
                         "loader.shards": False, "binary": True,
                         "conditioning.engine": "auto", "conditioning.precision": "fp32",
                         "phase.head_init": "random",
                         # int8 x-vectors made before the recipe was recorded had 8-bit weights
                         # (before 2026-12-07) or 7-bit ones: unknown which, so they match no recipe
                         "conditioning.int8": "not recorded"}
# old parameter-name prefix -> new, for the module attributes the RENAMED config keys name
RENAMED_WEIGHTS: dict[str, str] = {"backend.": "pooling."}


def renamed_to(dotted: str) -> tuple[str, int] | None:
    """(new name, schema version) when `dotted` is a config key renamed since, else None."""
    for version, table in RENAMED.items():
        if dotted in table:
            return table[dotted], version
    return None


def upgrade_config(raw: dict, version: int | None, source: str) -> None:
    """Translate, in place, the keys of a raw config tree renamed after its `schema_version`
    (None: a hand-written config, which may use any old name; each is logged)."""
    for v in range((version or 1) + 1, SCHEMA_VERSION + 1):
        for old, new in RENAMED.get(v, {}).items():
            if _move(raw, old, new) and version is None:
                log.info("%s: %s is now called %s (read as such)", source, old, new)


def canonical_fingerprint(fingerprint: Any) -> Any:
    """A stage marker's or checkpoint's fingerprint in today's terms: renamed keys under their new
    names, added keys at their old-behaviour value left out. Two fingerprints name the same
    settings when their canonical forms are equal."""
    if isinstance(fingerprint, list):
        return [canonical_fingerprint(v) for v in fingerprint]
    if not isinstance(fingerprint, dict):
        return fingerprint
    out = {k: canonical_fingerprint(v) for k, v in fingerprint.items()}
    for table in RENAMED.values():
        for old, new in table.items():
            if isinstance(out.get(old.split(".", 1)[0]), dict):
                _move(out, old, new)
    for added, default in ADDED.items():
        *path, key = added.split(".")
        node: Any = out
        for name in path:
            node = node.get(name) if isinstance(node, dict) else None
        if isinstance(node, dict) and key in node and _same(node[key], default):
            del node[key]
    return out


def fingerprint_changes(recorded: Any, current: dict) -> list[str]:
    """The top-level keys whose settings differ (empty: the same settings), `recorded` as read
    from an output of any version."""
    old, new = canonical_fingerprint(recorded), canonical_fingerprint(current)
    if not isinstance(old, dict):
        return sorted(new) or ["fingerprint"]
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def changed_values(recorded: Any, current: dict, limit: int = 3) -> str:
    """The first `limit` changed settings as "key: old -> new" (dotted keys, short values): what a
    refused re-run names, so a changed default is recognised as one."""
    changes: list[str] = []

    def walk(old: Any, new: Any, key: str) -> None:
        if isinstance(old, dict) and isinstance(new, dict):
            for k in sorted(set(old) | set(new)):
                walk(old.get(k), new.get(k), f"{key}.{k}" if key else k)
        elif old != new:  # a key left out at its old-behaviour value is shown with that value
            old, new = (ADDED.get(key) if v is None else v for v in (old, new))
            changes.append(f"{key or 'fingerprint'}: {_short(old)} -> {_short(new)}")

    walk(canonical_fingerprint(recorded), canonical_fingerprint(current), "")
    return "; ".join(changes[:limit]) + ("; ..." if len(changes) > limit else "")


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def upgrade_state_dict(state: dict) -> dict:
    """Parameter names of an old state dict under today's module names."""
    out = {}
    for name, value in state.items():
        for old, new in RENAMED_WEIGHTS.items():
            if name.startswith(old):
                name = new + name[len(old):]
        out[name] = value
    return out


def _same(value: Any, default: Any) -> bool:
    """Equal as JSON values: 0 and 0.0 are, False and 0 are not."""
    return value == default and isinstance(value, bool) == isinstance(default, bool)


def _move(tree: dict, old: str, new: str) -> bool:
    """Move the value at dotted key `old` to `new` (unless `new` is set too); True if moved."""
    *path, key = old.split(".")
    node: Any = tree
    for k in path:
        node = node.get(k) if isinstance(node, dict) else None
    *new_path, new_key = new.split(".")
    target: Any = tree
    for k in new_path:
        target = target.get(k) if isinstance(target, dict) else None
    if not isinstance(node, dict) or key not in node or (isinstance(target, dict) and new_key in target):
        return False
    value = node.pop(key)
    target = tree
    for k in new_path:
        target = target.setdefault(k, {})
    target[new_key] = value
    return True
