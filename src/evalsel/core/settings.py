"""Where every setting's default lives: config/config.yaml, once. The schema
(workflow/schemas/config.schema.yaml) declares each key's type and range and gives defaults only to
list entries (a pool source's ``format``, an arm's ``dsir`` block), which a config file's list
replaces whole. The package's settings types (TrainSettings, GuardSettings, ...) and the
command line read their defaults here, so that a default is changed in one place.

The files are read from the checkout holding this package (the workflow runs from a checkout:
``pip install -e .``)."""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[3]
CONFIG = ROOT / "config" / "config.yaml"
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"


@functools.cache
def _load(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: evalsel's defaults are read from the checkout's {path.name}")
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def _walk(node: Any, key: str, where: Path) -> Any:
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(f"{key!r} is not a key of {where}")
        node = node[part]
    return copy.deepcopy(node)


def default(key: str) -> Any:
    """config/config.yaml's value of the dotted ``key``, e.g. ``default("train.lora_r")``."""
    return _walk(_load(CONFIG), key, CONFIG)


def entry_default(definition: str, key: str) -> Any:
    """The schema's default of a list entry's dotted ``key``, e.g. ``entry_default("arm", "dsir.ngrams")``."""
    node = _load(SCHEMA)["$defs"][definition]
    for part in key.split("."):
        node = node["properties"][part]
    if "default" not in node:
        raise KeyError(f"{definition}.{key} has no default in {SCHEMA}")
    return copy.deepcopy(node["default"])


def fields_from(source: type, *names: str):
    """Class decorator (under ``@dataclass``): declare the fields ``names`` as the dataclass
    ``source`` declares them (type and default), after the class's own fields, so that a stage
    taking settings from another (DPO and RL from ``train:``) does not write them again."""
    import dataclasses

    declared = {f.name: f for f in dataclasses.fields(source)}

    def wrap(cls: type) -> type:
        annotations = cls.__dict__.get("__annotations__")
        if annotations is None:
            annotations = {}
            cls.__annotations__ = annotations
        for name in names:
            f = declared[name]
            if f.default is dataclasses.MISSING:
                raise TypeError(f"{source.__name__}.{name} has no plain default to take")
            annotations[name] = f.type
            setattr(cls, name, f.default)
        return cls

    return wrap
