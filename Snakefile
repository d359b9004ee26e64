# Eval-driven data selection: recall benchmark-like samples from a fine-tuning pool,
# LoRA-train on them, and compare with the base model and a random pick of the same size.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"


wildcard_constraints:
    subject="|".join(SUBJECTS),
    source="|".join(SOURCES),
    shard=r"shard-\d{5}",
    arm=one_of(ARMS),
    seed=r"\d+",
    model="|".join(["base"] + [r"[a-z_]+-seed\d+"]),
    bench="|".join(TRANSFER) or "none",


include: "rules/data.smk"
include: "rules/embed.smk"
include: "rules/select.smk"
include: "rules/train.smk"
include: "rules/rl.smk"
include: "rules/transfer.smk"
include: "rules/report.smk"
include: "rules/crosscheck.smk"


rule all:
    default_target: True
    input:
        final_targets(),
