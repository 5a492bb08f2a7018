"""A method in one file (issue 26): an objective outside refbench, named by import path in a
``--config`` file with its keyword arguments in ``[method.params]``, trains with no edit to refbench."""

from __future__ import annotations

import math
import textwrap

import pytest
from cli_helpers import run_refbench as refbench

from refbench.config import load_config
from refbench.errors import ConfigError
from refbench.store import Store

# Diffusion-DPO plus an SFT term on the winners: the file a user writes (about 15 lines).
DPO_SFT = '''
import torch.nn.functional as F

from refbench.method.losses import PreferenceLoss


def dpo_sft(forward, method, sft_weight=0.0):
    """Diffusion-DPO plus sft_weight times the winners' denoising error."""
    model_w, model_l = forward.halves(forward.model_err)
    ref_w, ref_l = forward.halves(forward.ref_err)
    reward_w, reward_l = (ref_w - model_w).detach(), (ref_l - model_l).detach()
    inside = 0.5 * method.beta * forward.weight * ((ref_w - model_w) - (ref_l - model_l))
    loss = -F.logsigmoid(inside).mean() + sft_weight * model_w.mean()
    margin = reward_w - reward_l
    return PreferenceLoss(loss=loss, margin=margin, accuracy=(margin > 0).float().mean(),
                          reward_w=reward_w, reward_l=reward_l, logits=inside.detach())
'''

WINNERS_ONLY = '''
from refbench.method.losses import PreferenceLoss
from refbench.method.objectives import preference_objective


@preference_objective(needs_reference=False, winners_only=True)
def huber_sft(forward, method, delta=1.0):
    """SFT with a Huber penalty on the winners' error."""
    err = forward.model_err
    return PreferenceLoss(loss=(err.clamp(max=delta) ** 2 / 2 + delta * (err - delta).clamp(min=0)).mean())


def not_a_loss(forward, method):
    return forward.model_err.mean()
'''


def _files(tmp_path, module: str, source: str, objective: str, params: str = "", extra: str = "") -> str:
    (tmp_path / f"{module}.py").write_text(source)
    config = tmp_path / f"{module}.toml"
    config.write_text(
        f'[method]\nobjective = "{module}:{objective}"\n{extra}' + (f"[method.params]\n{params}\n" if params else "")
    )
    return str(config)


def test_an_external_objective_trains_and_its_first_loss_is_its_formula_on_the_dpo_runs_first_batch(
    toy_world, tmp_path, monkeypatch, capsys
):
    """Same seed, same first batch and weights: the file's formula is the built-in dpo loss plus
    sft_weight * the winners' mean error, both read from the dpo run's first logged step. At step 1
    the policy is its reference, so every implicit reward is 0 and the dpo loss is
    -log sigmoid(0) = log 2 (by hand), up to float rounding between the two forward passes
    (a margin of ~1e-7, times beta 5000 / 2: ~2e-4 on the loss)."""
    monkeypatch.chdir(tmp_path)  # the module is found in the working directory
    config = _files(tmp_path, "ext_dpo_sft", DPO_SFT, "dpo_sft", "sft_weight = 0.5")
    db = tmp_path / "db.duckdb"
    common = [
        "--model",
        toy_world / "base",
        "--data",
        toy_world / "pairs.parquet",
        "--db",
        db,
        "--out",
        tmp_path / "runs",
        "--no-progress",
        "--method",
        "diff-dpo",
        "--set",
        "training.max_steps=3",
        "--set",
        "training.batch_size=2",
        "--set",
        "training.monitor_size=2",
    ]
    code, _, err = refbench(monkeypatch, capsys, "train", *common, "--name", "builtin")
    assert code == 0, err
    code, _, err = refbench(monkeypatch, capsys, "train", *common, "--config", config, "--name", "mine")
    assert code == 0, err
    store = Store(db)
    first = store.query("select run, loss, model_err_w from train_metrics where step = 1 order by run").set_index("run")
    assert first.loc["builtin", "loss"] == pytest.approx(math.log(2), abs=1e-3)
    expected = first.loc["builtin", "loss"] + 0.5 * first.loc["builtin", "model_err_w"]
    assert first.loc["mine", "loss"] == pytest.approx(expected, rel=1e-6)
    assert first.loc["mine", "model_err_w"] == first.loc["builtin", "model_err_w"]  # the same batch, noise and weights
    method = store.get_run("mine")["config"]["method"]
    assert (method["objective"], method["params"]) == ("ext_dpo_sft:dpo_sft", {"sft_weight": 0.5})
    last = store.query("select run, loss from train_metrics where step = 3 order by run").set_index("run")["loss"]
    assert math.isfinite(last["mine"]) and last["mine"] != last["builtin"]  # it trained, and on its own loss


def test_a_winners_only_objective_runs_without_a_reference(toy_world, tmp_path, monkeypatch, capsys):
    """``preference_objective(needs_reference=False, winners_only=True)``: no reference pass (no
    reference errors logged), winners only (no losers' error, no accuracy), params from --set.
    One winner per step and delta = 10 above any toy error: the loss is e^2 / 2 of its error e."""
    monkeypatch.chdir(tmp_path)
    config = _files(tmp_path, "ext_huber", WINNERS_ONLY, "huber_sft", extra='reference = "none"\n')
    db = tmp_path / "db.duckdb"
    code, _, err = refbench(
        monkeypatch,
        capsys,
        "train",
        "--model",
        toy_world / "base",
        "--data",
        toy_world / "pairs.parquet",
        "--db",
        db,
        "--out",
        tmp_path / "runs",
        "--no-progress",
        "--method",
        "sft",
        "--config",
        config,
        "--set",
        "method.params.delta=10",
        "--set",
        "training.max_steps=2",
        "--set",
        "training.batch_size=1",
        "--set",
        "training.gradient_accumulation_steps=1",
        "--set",
        "training.monitor_size=2",
    )
    assert code == 0, err
    rows = Store(db).query(
        "select loss, accuracy, model_err_w, model_err_l, ref_err_w from train_metrics order by step"
    )
    assert len(rows) == 2 and rows[["accuracy", "model_err_l", "ref_err_w"]].isna().all().all()
    assert (rows["model_err_w"] < 10).all()
    assert rows["loss"].tolist() == pytest.approx((rows["model_err_w"] ** 2 / 2).tolist(), rel=1e-6)


def test_a_wrong_return_type_is_one_line(toy_world, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = _files(tmp_path, "ext_bad_return", WINNERS_ONLY, "not_a_loss")
    code, _, err = refbench(
        monkeypatch,
        capsys,
        "train",
        "--model",
        toy_world / "base",
        "--data",
        toy_world / "pairs.parquet",
        "--db",
        tmp_path / "db.duckdb",
        "--out",
        tmp_path / "runs",
        "--no-progress",
        "--method",
        "diff-dpo",
        "--config",
        config,
        "--set",
        "training.max_steps=1",
        "--set",
        "training.batch_size=2",
    )
    assert code == 2 and "\n" not in err
    assert err == (
        "error: method.objective: ext_bad_return:not_a_loss returned Tensor; it must return a "
        "refbench.method.losses.PreferenceLoss whose loss is a scalar tensor"
    )


@pytest.mark.parametrize(
    "objective, params, extra, message",
    [
        ("nosuch_module_xyz:fn", "", "", "method.objective: cannot import module 'nosuch_module_xyz'"),
        ("ext_errors:missing", "", "", "method.objective: module 'ext_errors' has no function 'missing'"),
        ("ext_errors:dpo_sft", "weight = 2", "", "method.params: ext_errors:dpo_sft cannot take them"),
        (
            "ext_errors:huber_sft",
            "",
            "",
            "method.reference: must be 'none': the ext_errors:huber_sft objective is reference-free",
        ),
        ("dpo", "beta = 3", "", "method.params: must be empty for the built-in dpo objective (its knobs: method.beta;"),
        (
            "nodpo",
            "",
            "",
            "method.objective: must be a built-in objective (dpo, dspo, kto, mapo, sft) or a function of your own as 'module:function'; got 'nodpo'",
        ),
        (":fn", "", "", "method.objective: must read 'module:function' (e.g. 'my_losses:my_dpo'); got ':fn'"),
        ("missing_file.py:fn", "", "", "method.objective: no file missing_file.py"),
    ],
)
def test_a_bad_objective_is_one_line(tmp_path, monkeypatch, objective, params, extra, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ext_errors.py").write_text(DPO_SFT + WINNERS_ONLY)
    config = tmp_path / "c.toml"
    config.write_text(
        f'[method]\nobjective = "{objective}"\n{extra}' + (f"[method.params]\n{params}\n" if params else "")
    )
    with pytest.raises(ConfigError) as caught:
        load_config(method="diff-dpo", config_file=config)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_a_py_file_path_names_an_objective_too(tmp_path):
    """``path/to/file.py:function`` needs no import path at all."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "losses.py").write_text(textwrap.dedent(DPO_SFT))
    config = tmp_path / "c.toml"
    config.write_text(f'[method]\nobjective = "{tmp_path}/sub/losses.py:dpo_sft"\n[method.params]\nsft_weight = 1.0\n')
    method = load_config(method="diff-dpo", config_file=config).method
    assert method.resolved_objective().needs_reference and method.params == {"sft_weight": 1.0}
