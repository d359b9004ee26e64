"""Config checks before any job: short schema errors, and every cross-key rule refused in one line."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from conftest import REPO, copy_repo, run_snakemake

from evalsel.config import ConfigError, check, cross_key_problems, schema_problems

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


@pytest.fixture
def default_config():
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text(encoding="utf-8"))


def _problems(cfg, **env):
    cfg = copy.deepcopy(cfg)
    with pytest.raises(ConfigError) as exc:
        check(cfg, SCHEMA, environ=env)
    return exc.value.problems


def test_the_default_and_demo_configs_pass(default_config):
    check(copy.deepcopy(default_config), SCHEMA, environ={})
    demo = yaml.safe_load((REPO / "demo" / "config.yaml").read_text(encoding="utf-8"))
    check(_merge(copy.deepcopy(default_config), demo), SCHEMA, environ={})


def _merge(base, over):
    """``over`` merged into ``base`` key by key, as Snakemake merges config files."""
    for k, v in over.items():
        base[k] = _merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return base


def test_duplicate_source_names_are_refused_naming_both(default_config):
    cfg = copy.deepcopy(default_config)
    cfg["pool"]["sources"].append({**cfg["pool"]["sources"][0], "hf_data_files": "finetune/valid_zh_0.json"})
    (line,) = _problems(cfg)
    assert "'shibing624_medical'" in line and "pool.sources[0]" in line and "pool.sources[1]" in line


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda c: c["recall"].update(similarity_threshold=0.96), "must be below recall.max_similarity"),
        (lambda c: c["recall"].update(strategy="train_topk_mean", budget=None), "needs recall.budget"),
        (
            lambda c: (
                c.update(arms=[{"name": "eval_driven", "strategy": "cosine"}]),
                c["merge"].update(arms=["random"]),
            ),
            "merge.arms names 'random'",
        ),
        (lambda c: c["dpo"].update(enabled=True, preferences=None), "dpo.preferences"),
        (lambda c: c["embedding"].update(backend="zhipuai"), "ZHIPUAI_API_KEY is unset"),
        (lambda c: c["train"].update(method="qlora", deepspeed="zero3"), "use qlora with deepspeed null or zero2"),
        (lambda c: (c["eval"].update(few_shot=2), c["benchmark"].update(eval_splits=["val", "dev"])), "few_shot"),
    ],
)
def test_contradictory_settings_are_refused(default_config, edit, expected):
    cfg = copy.deepcopy(default_config)
    edit(cfg)
    problems = _problems(cfg)
    assert len(problems) == 1 and expected in problems[0], problems


def test_the_zhipuai_key_comes_from_the_environment(default_config):
    cfg = copy.deepcopy(default_config)
    cfg["embedding"]["backend"] = "zhipuai"
    assert cross_key_problems(cfg, {"ZHIPUAI_API_KEY": "sk-x"}) == []


def test_schema_errors_are_one_short_line_per_key(default_config):
    cfg = copy.deepcopy(default_config)
    cfg["train"]["lora_r"] = -1
    cfg["recall"]["top_k"] = "twenty"
    cfg["trian"] = {}
    problems = schema_problems(cfg, SCHEMA)
    assert len(problems) == 3
    assert any(p.startswith("train.lora_r: -1 is less than the minimum of 1") for p in problems)
    assert any(p.startswith("recall.top_k:") for p in problems)
    assert any("'trian'" in p and "unknown key" in p for p in problems)
    assert all(len(p) < 200 for p in problems)


def test_snakemake_prints_the_short_errors_not_the_schema(tmp_path):
    work = copy_repo(tmp_path / "repo")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"train": {"lora_r": 0}, "recall": {"similarity_threshold": 0.99}}))
    proc = run_snakemake(work, "-n", "--configfile", "config/config.yaml", str(bad))
    assert proc.returncode != 0
    assert "train.lora_r: 0 is less than the minimum of 1" in proc.stdout
    assert len(proc.stdout.splitlines()) < 20, proc.stdout
    # a schema-valid but contradictory config: the cross-key line, before any job
    bad.write_text(yaml.safe_dump({"recall": {"similarity_threshold": 0.99}}))
    proc = run_snakemake(work, "-n", "--configfile", "config/config.yaml", str(bad))
    assert proc.returncode != 0 and "must be below recall.max_similarity" in proc.stdout
    assert "Job stats" not in proc.stdout


def test_a_config_without_its_sections_says_so(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "config").mkdir()
    (elsewhere / "config" / "config.yaml").write_text("seed: 1\n")
    proc = run_snakemake(elsewhere, "-n", "-s", str(REPO / "workflow" / "Snakefile"))
    assert proc.returncode != 0
    assert "'benchmark' is a required property" in proc.stdout
    assert len(proc.stdout.splitlines()) < 30
    (elsewhere / "config" / "config.yaml").unlink()
    proc = run_snakemake(elsewhere, "-n", "-s", str(REPO / "workflow" / "Snakefile"))
    assert proc.returncode != 0 and "config.yaml" in proc.stdout and "not present" in proc.stdout


def test_missing_config_message():
    with pytest.raises(ConfigError, match="config/config.yaml was not found in the working directory"):
        check({}, SCHEMA, cwd=Path("/nowhere"))


ARMS_OK = [
    {"name": "eval_driven", "strategy": "cosine"},
    {"name": "rds", "strategy": "rds", "budget": 100},
    {"name": "dsir", "strategy": "dsir", "budget": 100, "dsir": {"buckets": 4096}},
    {"name": "random", "strategy": "random", "match": "eval_driven"},
]


def test_four_arms_resolve_with_their_settings(default_config):
    from evalsel.select.arms import resolve

    cfg = copy.deepcopy(default_config)
    cfg["arms"] = copy.deepcopy(ARMS_OK)
    cfg["arms"][0]["recall"] = {"top_k": 5}
    check(cfg, SCHEMA, environ={})
    arms = resolve(cfg)
    assert list(arms) == ["eval_driven", "rds", "dsir", "random"]
    assert arms["eval_driven"].recall["top_k"] == 5 and arms["eval_driven"].recall["strategy"] == "per_query_topk"
    # RDS+: round-robin over subjects on the arm's budget, no threshold or max_similarity in its space
    assert arms["rds"].recall["strategy"] == "round_robin_max" and arms["rds"].recall["budget"] == 100
    assert arms["rds"].recall["max_similarity"] is None
    # the schema fills the DSIR defaults the arm did not set
    assert arms["dsir"].dsir == {"ngrams": 2, "buckets": 4096, "laplace": 0.0, "gumbel": True, "min_tokens": 0}
    assert arms["random"].match == "eval_driven" and arms["dsir"].mix_ratio == cfg["sft"]["random_mix_ratio"]
    # the demo's own four-arm config passes too
    demo = yaml.safe_load((REPO / "demo" / "config.yaml").read_text(encoding="utf-8"))
    four = yaml.safe_load((REPO / "demo" / "arms.yaml").read_text(encoding="utf-8"))
    merged = _merge(_merge(copy.deepcopy(default_config), demo), four)
    check(merged, SCHEMA, environ={})
    assert [a["strategy"] for a in merged["arms"]] == ["cosine", "rds", "dsir", "random"]


@pytest.mark.parametrize(
    "arms, expected",
    [
        ([{"name": "random", "strategy": "random"}], "no arm selects"),
        ([{"name": "a", "strategy": "cosine"}, {"name": "r", "strategy": "random"}], "needs 'match'"),
        (
            [{"name": "a", "strategy": "cosine"}, {"name": "r", "strategy": "random", "match": "nope"}],
            "match 'nope' is not a selecting arm",
        ),
        ([{"name": "d", "strategy": "dsir"}], "strategy 'dsir' needs a budget"),
        ([{"name": "r", "strategy": "rds"}], "strategy 'rds' needs a budget"),
        ([{"name": "a", "strategy": "cosine", "dsir": {"ngrams": 1}}], "'dsir' does not apply to strategy 'cosine'"),
        ([{"name": "a", "strategy": "cosine"}, {"name": "a", "strategy": "dsir", "budget": 5}], "more than once"),
        (
            [{"name": "a", "strategy": "cosine", "recall": {"strategy": "train_topk_mean"}}],
            "needs recall.budget",
        ),
    ],
)
def test_contradictory_arms_are_refused(default_config, arms, expected):
    cfg = copy.deepcopy(default_config)
    cfg["arms"] = arms
    cfg["merge"]["arms"] = []
    problems = _problems(cfg)
    assert len(problems) == 1 and expected in problems[0], problems


def test_arm_names_are_checked_by_the_schema(default_config):
    cfg = copy.deepcopy(default_config)
    cfg["arms"] = [{"name": "base", "strategy": "cosine"}, {"name": "Bad-1", "strategy": "cosine"}]
    problems = schema_problems(cfg, SCHEMA)
    assert len(problems) == 2 and all(p.startswith("arms[") for p in problems), problems


@pytest.mark.parametrize(
    "edit, key",
    [
        (lambda c: c["recall"].update(max_similarity=float("nan")), "recall.max_similarity"),
        (lambda c: c["leak_guard"].update(containment=float("nan")), "leak_guard.containment"),
        (lambda c: c["train"].update(learning_rate=float("inf")), "train.learning_rate"),
        (
            lambda c: c["arms"][0].update(recall={"similarity_threshold": float("nan")}),
            "arms[0].recall.similarity_threshold",
        ),
    ],
)
def test_nan_and_infinity_are_refused_before_any_job(default_config, edit, key):
    """JSON-schema bounds hold for NaN (every comparison with NaN is false): without this check
    max_similarity .nan would switch the leak filter off silently."""
    cfg = copy.deepcopy(default_config)
    edit(cfg)
    problems = _problems(cfg)
    assert any(p.startswith(f"{key}: ") and "not a finite number" in p for p in problems), problems


def test_yaml_nan_from_a_config_file_is_refused(tmp_path):
    work = copy_repo(tmp_path / "repo")
    bad = tmp_path / "nan.yaml"
    bad.write_text("recall:\n  max_similarity: .nan\n")
    proc = run_snakemake(work, "-n", "--configfile", "config/config.yaml", str(bad))
    assert proc.returncode != 0 and "recall.max_similarity: nan is not a finite number" in proc.stdout, proc.stdout[
        -2000:
    ]
    assert "Job stats" not in proc.stdout


def test_the_default_config_resolves_from_any_working_directory(tmp_path):
    """Every path the default config names (the DeepSpeed JSON, the package's code inputs, the
    schema) resolves under --directory and from another working directory with -s."""
    import shutil

    work = copy_repo(tmp_path / "repo")
    other = tmp_path / "elsewhere"
    other.mkdir()
    shutil.copytree(work / "config", other / "config", dirs_exist_ok=True)
    for cwd, args in ((work, ["--directory", str(other)]), (other, ["-s", str(work / "workflow" / "Snakefile")])):
        proc = run_snakemake(cwd, "-n", *args)
        assert proc.returncode == 0, proc.stdout[-3000:]
        assert "MissingInputException" not in proc.stdout and "rule benchmark_fetch:" in proc.stdout


def test_nested_command_line_values_are_read_as_their_types(default_config, tmp_path):
    """Snakemake hands --config "train={max_steps: 4}" over as the string '4': it is read as the
    integer the schema wants (before: "'4' is not of type 'integer'"); a string that does not
    read as the wanted type still fails the schema, naming the key."""
    from evalsel.config import coerce_strings

    schema = yaml.safe_load(SCHEMA.read_text(encoding="utf-8"))
    cfg = copy.deepcopy(default_config)
    cfg["train"].update(max_steps="4", learning_rate="0.001", gradient_checkpointing="false", seeds=["1", "2"])
    cfg["recall"]["budget"] = "null"
    cfg["train"]["base_model"] = "123"  # a string setting stays a string
    out = coerce_strings(cfg, schema)
    assert out["train"]["max_steps"] == 4 and out["train"]["learning_rate"] == 0.001
    assert out["train"]["gradient_checkpointing"] is False and out["train"]["seeds"] == [1, 2]
    assert out["recall"]["budget"] is None and out["train"]["base_model"] == "123"
    cfg["train"]["max_steps"] = "four"
    assert any(p.startswith("train.max_steps: 'four'") for p in _problems(cfg))
    work = copy_repo(tmp_path / "repo")
    proc = run_snakemake(work, "-n", "--configfile", "demo/config.yaml", "--config", "train={max_steps: 4, gpus: 0}")
    assert proc.returncode == 0, proc.stdout[-3000:]


def test_every_default_is_a_value_of_config_yaml_and_nowhere_else_in_the_schema(default_config):
    """One place per default: the schema's properties carry types and ranges, no `default`
    (only list entries, such as a pool source's format, get theirs from the schema's $defs), and
    config/config.yaml holds a value for every key the schema documents."""
    schema = yaml.safe_load(SCHEMA.read_text(encoding="utf-8"))

    def defaults(node, path=""):
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "default":
                    yield path
                yield from defaults(v, f"{path}.{k}" if path else k)
        elif isinstance(node, list):
            for i, v in enumerate(node):
                yield from defaults(v, f"{path}[{i}]")

    assert [p for p in defaults(schema["properties"])] == []
    from evalsel.config import missing_key_problems

    assert missing_key_problems(default_config, schema) == []


def test_a_config_missing_a_key_is_refused_naming_it(default_config):
    """Sabotage: an older config without train.lora_r (no schema default fills it any more)."""
    cfg = copy.deepcopy(default_config)
    del cfg["train"]["lora_r"], cfg["benchmark"]["local"]["encoding"]
    problems = _problems(cfg)
    assert problems == [
        "benchmark.local.encoding: missing (every key needs a value: copy it from config/config.yaml)",
        "train.lora_r: missing (every key needs a value: copy it from config/config.yaml)",
    ]
