"""`refbench doctor` on tiny random-weight reward models built offline (as test_rewards builds them).

`refbench doctor` runs in this process through the real entry point (``cli_helpers.run_refbench``,
offline as conftest.py sets it), except where the environment it starts with is the point."""

import hashlib
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
from cli_helpers import run_refbench
from reward_helpers import tiny_hf_clip as _tiny_hf_clip
from reward_helpers import tiny_open_clip as _tiny_open_clip


@pytest.fixture
def doctor(monkeypatch, capsys):
    """`refbench doctor METRICS` in this process: returncode, stdout and stderr (stripped)."""

    def call(*metrics):
        code, out, err = run_refbench(monkeypatch, capsys, "doctor", *metrics)
        return SimpleNamespace(returncode=code, stdout=out, stderr=err)

    return call


@pytest.mark.slow
def test_doctor_is_offline_unless_asked(tmp_path):
    """Without HF_HUB_OFFLINE in the environment (and an empty hub cache), a model named by hub id
    fails at once with the offline reason, and nothing tries the hub (no retry lines)."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    result = subprocess.run(
        [sys.executable, "-m", "refbench", "doctor", "pickscore"],
        capture_output=True,
        text=True,
        env={**env, "HF_HOME": str(tmp_path / "hf")},
    )
    assert result.returncode == 2
    assert "HF_HUB_OFFLINE is set" in result.stdout
    assert "retry" not in (result.stdout + result.stderr).lower()
    assert result.stderr.strip() == "error: 1 of 1 reward models cannot be loaded here: pickscore"


@pytest.mark.slow
def test_doctor_passes_on_loadable_models_and_names_their_weights(tmp_path, doctor):
    """PickScore as a folder (its model.safetensors) and HPSv2 as a file: both load, exit 0, and the
    printed sha256 is the file's own (for the folder: of its one weight file)."""
    _tiny_hf_clip(tmp_path / "pickscore")
    _tiny_open_clip(tmp_path / "hps", "HPS_v2_compressed.pt", wrap=True)
    hps = tmp_path / "hps" / "HPS_v2_compressed.pt"
    weights = sorted(p for p in (tmp_path / "pickscore").rglob("*") if p.suffix in (".safetensors", ".bin"))
    assert len(weights) == 1
    result = doctor(f"pickscore={tmp_path / 'pickscore'}", f"hpsv2={hps}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert hashlib.sha256(hps.read_bytes()).hexdigest() in result.stdout
    assert hashlib.sha256(weights[0].read_bytes()).hexdigest() in result.stdout
    assert result.stdout.count("ok ") == 2 and "FAILED" not in result.stdout


@pytest.mark.slow
def test_doctor_fails_in_one_line_on_a_missing_or_truncated_checkpoint(tmp_path, doctor):
    """A truncated HPSv2 file (its first half) and a path that is not there: both FAILED with
    their reason on one line, and the command ends with one error line and exit code 2."""
    _tiny_open_clip(tmp_path / "hps", "HPS_v2_compressed.pt", wrap=True)
    whole = (tmp_path / "hps" / "HPS_v2_compressed.pt").read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(whole[: len(whole) // 2])
    result = doctor(f"hpsv2={truncated}", f"pickscore={tmp_path / 'nowhere'}")
    assert result.returncode == 2
    assert result.stdout.count("FAILED") == 2
    assert result.stderr.strip() == "error: 2 of 2 reward models cannot be loaded here: hpsv2, pickscore"
    assert f"hpsv2: cannot load '{truncated}'" in result.stdout


@pytest.mark.slow
def test_doctor_without_arguments_reports_the_stack_and_the_papers_five(doctor):
    """No arguments: versions of torch, diffusers, transformers, accelerate, open_clip and the GPU
    line, then the paper's five reward models; offline, without their weights, all five fail."""
    from importlib import metadata

    result = doctor()
    assert result.returncode == 2
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["torch", metadata.version("torch")]
    assert any(line.startswith("gpu ") for line in lines)
    for name in ("pickscore", "hpsv2", "clip", "laion-aesthetic", "imagereward"):
        assert any(line.startswith(name) and "FAILED" in line for line in lines)


def test_every_score_records_its_checkpoint_and_another_one_is_refused(tmp_path):
    """Scoring with pickscore=DIR records DIR and the sha256 of its weight file in metric_sources;
    scoring the same store's pickscore column from another checkpoint (other weights) is refused
    in one line that names both."""
    import numpy as np
    import pytest
    from PIL import Image

    from refbench.errors import RefbenchError
    from refbench.evaluation.score import score
    from refbench.store import Store

    _tiny_hf_clip(tmp_path / "pickscore")
    weights = next(p for p in (tmp_path / "pickscore").rglob("*") if p.suffix in (".safetensors", ".bin"))
    store = Store(tmp_path / "db.duckdb")
    rows = []
    for index in range(3):
        path = tmp_path / f"sample{index}.png"
        Image.fromarray(np.full((16, 16, 3), 40 * index, dtype=np.uint8)).save(path)
        rows.append(
            {
                "sample_id": f"s{index}",
                "run": "r",
                "prompt_set": "toy-test",
                "prompt": f"a red circle {index}",
                "seed": 0,
                "image_path": str(path),
                "guidance_scale": 3.0,
                "num_steps": 2,
                "created_at": None,
            }
        )
    store.upsert("samples", rows)
    assert score("r", metrics=f"pickscore={tmp_path / 'pickscore'}", db=tmp_path / "db.duckdb", progress=False) == {
        "pickscore": 3
    }
    recorded = store.query("SELECT metric, source, weights_sha256, size_bytes FROM metric_sources")
    assert recorded.to_dict("records") == [
        {
            "metric": "pickscore",
            "source": str(tmp_path / "pickscore"),
            "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
            "size_bytes": weights.stat().st_size,
        }
    ]
    import torch

    torch.manual_seed(123)  # other random weights: another checkpoint
    _tiny_hf_clip(tmp_path / "other")
    with pytest.raises(
        RefbenchError,
        match=r"pickscore scores in .* come from .*pickscore \(sha256 [0-9a-f]{12}\), not "
        r".*other \(sha256 [0-9a-f]{12}\)",
    ):
        score("r", metrics=f"pickscore={tmp_path / 'other'}", db=tmp_path / "db.duckdb", progress=False)


@pytest.mark.slow
def test_imagereward_loads_in_refbenchs_own_environment(tmp_path, doctor):
    """The ported ImageReward (a tiny ImageReward.pt with its configs and tokenizer beside it)
    loads through `refbench doctor` in the environment `make test` installs: exit 0, its sha256."""
    from reward_helpers import tiny_imagereward

    checkpoint = tiny_imagereward(tmp_path / "ir")
    result = doctor(f"imagereward={checkpoint}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAILED" not in result.stdout and hashlib.sha256(checkpoint.read_bytes()).hexdigest() in result.stdout
