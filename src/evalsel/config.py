"""The workflow's configuration checks, run by ``rules/common.smk`` before any job is scheduled:
the schema (one short line per failing key, not the schema dump), then every rule that ties two
keys together, so that a contradictory config fails in a second and not after hours of embedding.
"""

from __future__ import annotations

import codecs
import math
import os
from pathlib import Path

import yaml

from evalsel.select.arms import problems as arm_problems


class ConfigError(ValueError):
    """A config that cannot run: every problem found, one line each."""

    def __init__(self, problems: list[str], source: str = "config"):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem{'s' if len(problems) != 1 else ''}:\n{lines}")


def _short(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _key(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _types(node: dict, defs: dict) -> tuple[dict, set]:
    """The schema node behind ``$ref`` and the JSON types it allows."""
    while "$ref" in node:
        node = defs.get(node["$ref"].rsplit("/", 1)[-1], {})
    kinds = node.get("type", [])
    kinds = {kinds} if isinstance(kinds, str) else set(kinds)
    for alt in node.get("oneOf", []) + node.get("anyOf", []):
        kinds |= _types(alt, defs)[1]
    return node, kinds


def coerce_strings(config, schema: dict, node: dict | None = None):
    """Strings where the schema wants a number, a boolean or null, read as YAML: Snakemake's
    ``--config "train={max_steps: 4}"`` hands nested values over as strings ('4'). A string the
    schema allows, or one that does not read as the wanted type, is left for the schema to judge."""
    defs = schema.get("$defs", {})
    node, kinds = _types(schema if node is None else node, defs)
    if isinstance(config, dict):
        props = node.get("properties", {})
        return {k: coerce_strings(v, schema, props[k]) if k in props else v for k, v in config.items()}
    if isinstance(config, list) and "items" in node:
        return [coerce_strings(v, schema, node["items"]) for v in config]
    if isinstance(config, str) and kinds and "string" not in kinds:
        try:
            value = yaml.safe_load(config)
        except yaml.YAMLError:
            return config
        wanted = {
            "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
            "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
            "boolean": lambda v: isinstance(v, bool),
            "null": lambda v: v is None,
            "array": lambda v: isinstance(v, list),
            "object": lambda v: isinstance(v, dict),
        }
        if any(wanted[k](value) for k in kinds if k in wanted):
            return coerce_strings(value, schema, node)
    return config


def schema_problems(config: dict, schema_path: str | os.PathLike) -> list[str]:
    """One line per schema violation: the failing key, what it holds and the rule it broke."""
    import jsonschema

    with open(schema_path, encoding="utf-8") as fh:
        schema = yaml.safe_load(fh)
    cls = jsonschema.validators.validator_for(schema)
    problems = []
    for err in sorted(cls(schema).iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path]):
        key = _key(err.absolute_path)
        if err.validator == "required":
            problems.append(f"{key}: {err.message} (required)")
        elif err.validator == "additionalProperties":
            problems.append(f"{key}: {err.message} (unknown key; see config/README.md for the documented ones)")
        elif err.validator == "enum":
            problems.append(f"{key}: {_short(err.instance)} is not one of {err.validator_value} (enum)")
        elif err.validator in ("oneOf", "anyOf"):
            problems.append(f"{key}: {_short(err.instance)} matches none of the allowed forms ({err.validator})")
        else:
            msg = err.message if len(err.message) <= 160 else err.message[:157] + "..."
            problems.append(f"{key}: {msg} ({err.validator})")
    return problems


def missing_key_problems(config: dict, schema: dict, node: dict | None = None, path: tuple = ()) -> list[str]:
    """Every documented key absent from ``config``, one line each. The defaults live in one place,
    config/config.yaml (the schema declares types and ranges, not values), and Snakemake merges
    every --configfile over it; so a key can only be missing from a config that replaced it (an
    older copy, a config run without config/config.yaml), and it is refused before any job."""
    defs = schema.get("$defs", {})
    node, _ = _types(schema if node is None else node, defs)
    out = []
    for key, sub in node.get("properties", {}).items():
        where = (*path, key)
        if key not in config:
            out.append(f"{_key(where)}: missing (every key needs a value: copy it from config/config.yaml)")
        elif isinstance(config[key], dict) and _types(sub, defs)[0].get("properties"):
            out += missing_key_problems(config[key], schema, sub, where)
    return out


def missing_config_problem(config: dict, workdir: str | os.PathLike) -> str | None:
    """A clear line when no config was loaded at all (e.g. ``--directory`` elsewhere, no --configfile)."""
    if config:
        return None
    workdir = Path(workdir).resolve()
    return (
        f"no configuration loaded: config/config.yaml was not found in the working directory {workdir}. "
        "Run Snakemake from the checkout, copy config/config.yaml there, or point at one with "
        "--configfile PATH (with --directory, relative paths are taken from that directory)"
    )


def _duplicate_names(entries: list[dict], key: str) -> list[str]:
    """One line per name used more than once in the list ``key`` (names are file names and wildcards)."""
    where: dict[str, list[str]] = {}
    for i, entry in enumerate(entries):
        where.setdefault(entry.get("name"), []).append(f"{key}[{i}]")
    return [
        f"{key}: the name {name!r} is used {len(at)} times ({', '.join(at)}); names must be unique"
        for name, at in where.items()
        if len(at) > 1
    ]


def _encodings(config: dict) -> list[tuple[str, str]]:
    """``(config key, encoding)`` of every local input that names one."""
    out = [
        (f"pool.sources[{i}].encoding", src.get("encoding", "utf-8")) for i, src in enumerate(config["pool"]["sources"])
    ]
    out.append(("benchmark.local.encoding", config["benchmark"].get("local", {}).get("encoding", "utf-8")))
    out += [
        (f"transfer[{i}].local.encoding", b.get("local", {}).get("encoding", "utf-8"))
        for i, b in enumerate(config.get("transfer", []))
        if b["source"] == "local"
    ]
    return out


def non_finite_problems(config, path=()) -> list[str]:
    """One line per float that is NaN or infinite: JSON-schema bounds are true for NaN, so
    ``max_similarity: .nan`` would pass them and silently switch a filter off."""
    if isinstance(config, dict):
        return [p for k, v in config.items() for p in non_finite_problems(v, (*path, k))]
    if isinstance(config, list):
        return [p for i, v in enumerate(config) for p in non_finite_problems(v, (*path, i))]
    if isinstance(config, float) and not math.isfinite(config):
        return [f"{_key(path)}: {config!r} is not a finite number (NaN and infinity are refused)"]
    return []


def cross_key_problems(config: dict, environ: dict | None = None) -> list[str]:
    """Rules between keys that the schema cannot express. ``config`` has the schema's defaults filled in."""
    environ = os.environ if environ is None else environ
    problems = non_finite_problems(config)
    problems += _duplicate_names(config["pool"]["sources"], "pool.sources")
    problems += _duplicate_names(config.get("transfer", []), "transfer")
    for key, enc in _encodings(config):
        try:
            codecs.lookup(enc)
        except LookupError:
            problems.append(f"{key}: unknown encoding {enc!r} (e.g. utf-8, gb18030, big5, utf-16)")
    for i, src in enumerate(config["pool"]["sources"]):
        if src.get("hf_data_files") and src.get("hf_config"):
            problems.append(
                f"pool.sources[{i}]: hf_config {src['hf_config']!r} is ignored when hf_data_files "
                "names the files: set one of them"
            )
    for i, b in enumerate(config.get("transfer", [])):
        if b["source"] == "local" and not b.get("local", {}).get("path"):
            problems.append(f"transfer[{i}] ({b['name']}): source 'local' needs local.path")
        if b["source"] == "hf" and not b.get("hf_name"):
            problems.append(f"transfer[{i}] ({b['name']}): source 'hf' needs hf_name")
    problems += arm_problems(config)
    arms = [a["name"] for a in config["arms"]]
    for arm in config["merge"]["arms"]:
        if (
            arm not in arms
            and not (arm == "dpo" and config["dpo"]["enabled"])
            and not (arm == "rl" and config["rl"]["enabled"])
        ):
            problems.append(f"merge.arms names {arm!r}, which is not a trained arm (arms: {arms})")
    problems += rl_problems(config)
    if config["dpo"]["enabled"] and not config["dpo"]["preferences"]:
        problems.append("dpo.enabled is true but dpo.preferences (a prompt/chosen/rejected JSONL) is null")
    if config["embedding"]["backend"] == "zhipuai" and not environ.get("ZHIPUAI_API_KEY", "").strip():
        problems.append(
            "embedding.backend is 'zhipuai' but the environment variable ZHIPUAI_API_KEY is unset "
            "or empty: export it before running (the key is read from the environment only)"
        )
    if config["train"]["method"] == "qlora" and config["train"]["deepspeed"] == "zero3":
        problems.append(
            "train.method 'qlora' with train.deepspeed 'zero3' is not supported (4-bit weights "
            "cannot be partitioned by this workflow's loader); use qlora with deepspeed null or "
            "zero2, or lora/full with zero3"
        )
    if config.get("crosscheck", {}).get("lm_eval") and config["eval"]["mode"] != "logprob":
        problems.append(
            f"crosscheck.lm_eval compares letter scoring: it needs eval.mode 'logprob', not {config['eval']['mode']!r}"
        )
    problems += _base_model_problems(config)
    few_shot = config["eval"]["few_shot"]
    if few_shot and "dev" in [str(s) for s in config["benchmark"]["eval_splits"]]:
        problems.append(
            "eval.few_shot draws its examples from the dev split, which benchmark.eval_splits "
            "also scores: remove dev from eval_splits or set few_shot to 0"
        )
    return problems


# Hub benchmarks whose named splits are known to ship without answers.
_UNLABELLED_HUB_SPLITS = {"ceval/ceval-exam": {"test"}}


def rl_problems(config: dict) -> list[str]:
    """The RL stage's rules: an SFT arm to start from, labelled splits that are never scored, a
    method trl ships, an SFT method it can continue."""
    rl = config.get("rl") or {}
    if not rl.get("enabled"):
        return []
    problems = []
    arms = [a["name"] for a in config["arms"]]
    if rl["arm"] not in arms:
        problems.append(f"rl.arm {rl['arm']!r} is not a trained SFT arm (arms: {arms}): RL continues an SFT adapter")
    if rl["method"] == "ppo":
        problems.append(
            "rl.method 'ppo': trl removed PPOTrainer (huggingface/trl#7020); use 'grpo' or 'rloo' "
            "(critic-free, the same verifiable reward)"
        )
    if config["train"]["method"] == "qlora":
        problems.append("rl.enabled with train.method 'qlora' is not supported: RL continues lora or full SFT models")
    bench = config["benchmark"]
    splits = [str(s) for s in rl["splits"]]
    scored = sorted(set(splits) & {str(s) for s in bench["eval_splits"]})
    if scored:
        problems.append(
            f"rl.splits {scored} also scored (benchmark.eval_splits): RL would train on the scored questions"
        )
    if bench["source"] == "hf":
        unlabelled = sorted(set(splits) & _UNLABELLED_HUB_SPLITS.get(bench.get("hf_name"), set()))
        if unlabelled:
            problems.append(
                f"rl.splits {unlabelled}: {bench['hf_name']} ships that split without answers; "
                "the RL reward needs labelled questions (e.g. dev)"
            )
    elif not scored:
        problems += _local_rl_split_problems(bench, splits)
    return problems


def _local_rl_split_problems(bench: dict, splits: list[str]) -> list[str]:
    """A local RL split's files must exist and every question have an answer (read now: benchmark
    files are small, and an unlabelled RL split would otherwise fail only at its job)."""
    from evalsel.core.io import InputError
    from evalsel.data.benchmark import load_local_split, resolve_columns

    local = bench.get("local", {})
    if not local.get("path"):
        return []
    cols = resolve_columns(local.get("columns"))
    problems = []
    for subject in bench["subjects"]:
        for split in splits:
            try:
                load_local_split(local["path"], subject, split, cols, local.get("encoding", "utf-8"))
            except InputError as exc:
                problems.append(f"rl.splits {split!r}: {exc}")
            except OSError as exc:
                problems.append(f"rl.splits {split!r}: {subject}: {exc.strerror}: {exc.filename}")
    return problems


def _base_model_problems(config: dict) -> list[str]:
    """A GGUF base model must be a readable GGUF file of an architecture transformers converts."""
    from evalsel.core.io import InputError
    from evalsel.train.gguf_import import gguf_architecture, is_gguf, resolve_gguf

    base = config["train"]["base_model"]
    if not is_gguf(base):
        return []
    if config["demo"]["build_tiny_lm"]:
        return [
            f"train.base_model names the GGUF file {base!r} but demo.build_tiny_lm builds the base model: set one of them"
        ]
    try:
        gguf_architecture(resolve_gguf(base))
    except InputError as exc:
        return [f"train.base_model: {exc}"]
    return []


def check(
    config: dict,
    schema_path: str | os.PathLike,
    cwd: str | os.PathLike = ".",
    configfiles: list | None = None,
    environ: dict | None = None,
) -> None:
    """Raise :class:`ConfigError` listing every problem of ``config``: the schema's, a documented key
    missing, then the rules between keys. Fills in only the defaults of list entries (a pool
    source's ``format``, ...): every other default is a value of config/config.yaml."""
    missing = missing_config_problem(config, cwd)
    if missing:
        raise ConfigError([missing])
    import copy

    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    source = "config" if not configfiles else "config (" + ", ".join(str(c) for c in configfiles) + ")"
    with open(schema_path, encoding="utf-8") as fh:
        schema = yaml.safe_load(fh)
    coerced = coerce_strings(config, schema)
    config.clear()
    config.update(coerced)  # in place: the workflow's config object is the one the rules read
    before = copy.deepcopy(config)
    try:
        validate(config, str(schema_path))  # fills in the list entries' defaults
    except WorkflowError:
        problems = schema_problems(before, schema_path)
        if not problems:
            raise
        raise ConfigError(problems, source) from None
    problems = missing_key_problems(config, schema)
    if problems:
        raise ConfigError(problems, source)
    problems = cross_key_problems(config, environ)
    if problems:
        raise ConfigError(problems, source)
