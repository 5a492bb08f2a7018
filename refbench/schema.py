"""The store's schema: each table's columns and keys, as DuckDB DDL text.

Pure data, no DuckDB: ``store.py`` (the one module that talks to DuckDB) creates the tables from
it and reads from it which columns each writer accepts and which columns are a table's key.
"""

from __future__ import annotations

import re

__all__ = ["TABLES", "columns", "column_types", "key_columns"]

# Column lists double as the schema and as the accepted keys of each writer.
TABLES: dict[str, str] = {
    "runs": """
        name VARCHAR PRIMARY KEY, id VARCHAR, method VARCHAR, preset VARCHAR, config JSON,
        git_revision VARCHAR, versions JSON, seed BIGINT, status VARCHAR, run_dir VARCHAR,
        created_at TIMESTAMPTZ, updated_at TIMESTAMPTZ, message VARCHAR""",
    "train_metrics": """
        run VARCHAR, step BIGINT, loss DOUBLE, accuracy DOUBLE, margin DOUBLE,
        model_err_w DOUBLE, model_err_l DOUBLE, ref_err_w DOUBLE, ref_err_l DOUBLE,
        div_policy DOUBLE, div_ref DOUBLE, lr DOUBLE, seconds DOUBLE,
        PRIMARY KEY (run, step)""",
    "ref_events": """
        run VARCHAR, step BIGINT, kind VARCHAR, divergence DOUBLE,
        PRIMARY KEY (run, step, kind)""",
    # sigma_low / sigma_high: a flow model's noise levels s(t_low) and s(t_high - 1); NULL for DDPM.
    "timestep_stats": """
        run VARCHAR, analysis VARCHAR, bin INTEGER, t_low INTEGER, t_high INTEGER, n BIGINT,
        loss DOUBLE, reward_scale DOUBLE, accuracy DOUBLE, lambda_t DOUBLE, divergence DOUBLE,
        sigma_low DOUBLE, sigma_high DOUBLE,
        PRIMARY KEY (run, analysis, bin)""",
    # sample_id is a hash of (run, prompt_set, prompt, seed), so that key is unique too.
    "samples": """
        sample_id VARCHAR PRIMARY KEY, run VARCHAR, prompt_set VARCHAR, prompt VARCHAR, seed BIGINT,
        image_path VARCHAR, guidance_scale DOUBLE, num_steps INTEGER, created_at TIMESTAMPTZ,
        sampler VARCHAR, height INTEGER, width INTEGER, prompt_set_sha256 VARCHAR,
        denoiser_source VARCHAR, denoiser_sha256 VARCHAR""",
    # source / weights_sha256: the checkpoint (or, for built-in oracles, the code) that made the score.
    "scores": """
        sample_id VARCHAR, metric VARCHAR, value DOUBLE, source VARCHAR, weights_sha256 VARCHAR,
        PRIMARY KEY (sample_id, metric)""",
    "winrates": """
        run VARCHAR, baseline VARCHAR, metric VARCHAR, prompt_set VARCHAR, n BIGINT,
        rate DOUBLE, ci_low DOUBLE, ci_high DOUBLE, mean_run DOUBLE, mean_baseline DOUBLE,
        created_at TIMESTAMPTZ, PRIMARY KEY (run, baseline, metric, prompt_set)""",
    # Which checkpoint made a reward model's scores in this store (one per metric).
    "metric_sources": """
        metric VARCHAR PRIMARY KEY, source VARCHAR, weights_sha256 VARCHAR, size_bytes BIGINT,
        recorded_at TIMESTAMPTZ""",
    # `refbench make-pairs`: one row per output folder (its protocol: model, prompts, reward model and
    # the checkpoint that scored, sampling), the score of every candidate image, and the pairs written.
    "pair_sets": """
        out VARCHAR PRIMARY KEY, model VARCHAR, model_kind VARCHAR, pretrained VARCHAR, policy VARCHAR,
        prompt_set VARCHAR, prompt_set_sha256 VARCHAR, num_prompts BIGINT, reward VARCHAR,
        reward_source VARCHAR, reward_sha256 VARCHAR, per_prompt INTEGER, seed BIGINT, steps INTEGER,
        guidance_scale DOUBLE, resolution INTEGER, sampler VARCHAR, selection VARCHAR, min_gap DOUBLE,
        tie_tolerance DOUBLE, status VARCHAR, prompts_done BIGINT, num_pairs BIGINT, num_ties BIGINT,
        created_at TIMESTAMPTZ, finished_at TIMESTAMPTZ""",
    "pair_candidates": """
        out VARCHAR, prompt VARCHAR, seed BIGINT, score DOUBLE,
        PRIMARY KEY (out, prompt, seed)""",
    "made_pairs": """
        out VARCHAR, prompt VARCHAR, seed_0 BIGINT, seed_1 BIGINT, score_0 DOUBLE, score_1 DOUBLE,
        label_0 DOUBLE, PRIMARY KEY (out, prompt, seed_0, seed_1)""",
    # What a run's training cost: image-passes through each model by kind (policy, reference,
    # initial, monitor) and, in the row kind 'total', the wall seconds of its training steps.
    "run_costs": """
        run VARCHAR, kind VARCHAR, forward_images BIGINT, backward_images BIGINT, seconds DOUBLE,
        PRIMARY KEY (run, kind)""",
}


def columns(table: str) -> list[str]:
    return [name for name, _ in column_types(table)]


def column_types(table: str) -> list[tuple[str, str]]:
    """(name, SQL type) of each column, from the schema text."""
    pairs = []
    for part in re.split(r",\s*(?![^()]*\))", TABLES[table]):
        words = part.strip().split()
        if words[0].upper() not in ("PRIMARY", "UNIQUE"):
            pairs.append((words[0], words[1]))
    return pairs


def key_columns(table: str) -> list[str]:
    """The primary key's columns, from the schema text."""
    spec = TABLES[table]
    composite = re.search(r"PRIMARY KEY \(([^)]*)\)", spec)
    if composite:
        return [c.strip() for c in composite.group(1).split(",")]
    single = re.search(r"(\w+) \w+ PRIMARY KEY", spec)
    return [single.group(1)] if single else []
