"""Sharding without processes: the resume-layout rule, the accelerate-config checks, and the memory
table's arithmetic (numbers worked by hand in the docstrings)."""

import json

import pytest
import torch

from refbench.errors import CheckpointError, ConfigError
from refbench.training.sharding import check_resume_layout


def saved(layout):
    return {"state": {"step": 2, **({"sharded": layout} if layout else {})}}


def test_a_checkpoint_resumes_only_under_the_layout_that_wrote_it():
    check_resume_layout(None, sharded=True, num_processes=2)  # no checkpoint: anything goes
    check_resume_layout(saved(None), sharded=False, num_processes=4)
    check_resume_layout(saved({"processes": 2, "reference": True}), sharded=True, num_processes=2)
    with pytest.raises(CheckpointError, match="sharded over 2 processes and this launch has 4; resume with --num"):
        check_resume_layout(saved({"processes": 2, "reference": True}), sharded=True, num_processes=4)
    with pytest.raises(CheckpointError, match="sharded by FSDP over 2 processes; resume it with accelerate launch"):
        check_resume_layout(saved({"processes": 2, "reference": False}), sharded=False, num_processes=1)
    with pytest.raises(CheckpointError, match="written without FSDP"):
        check_resume_layout(saved(None), sharded=True, num_processes=2)


def test_fsdp1_and_full_state_dicts_are_refused_in_one_line():
    from accelerate.utils import FullyShardedDataParallelPlugin
    from torch.distributed.fsdp.fully_sharded_data_parallel import StateDictType

    from refbench.training.sharding import _check_plugin

    _check_plugin(FullyShardedDataParallelPlugin(fsdp_version=2, state_dict_type="SHARDED_STATE_DICT"))
    with pytest.raises(ConfigError, match="FSDP version 1; refbench shards with FSDP2 only: set fsdp_version: 2"):
        _check_plugin(FullyShardedDataParallelPlugin(fsdp_version=1, state_dict_type="SHARDED_STATE_DICT"))
    plugin = FullyShardedDataParallelPlugin(fsdp_version=2, state_dict_type="SHARDED_STATE_DICT")
    plugin.state_dict_type = StateDictType.FULL_STATE_DICT
    with pytest.raises(ConfigError, match="FULL_STATE_DICT; .* set fsdp_state_dict_type: SHARDED_STATE_DICT"):
        _check_plugin(plugin)


class Block(torch.nn.Module):
    def __init__(self, width):
        super().__init__()
        self.inner = torch.nn.Linear(width, width)  # width^2 + width parameters


class Net(torch.nn.Module):
    _no_split_modules = ["Block"]

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Linear(2, 3)  # 2*3 + 3 = 9: the root's own
        self.blocks = torch.nn.ModuleList([Block(4), Block(10)])  # 20 and 110


def test_fsdp_units_count_each_block_and_leave_the_rest_to_the_root():
    """Net: blocks of 4*4+4 = 20 and 10*10+10 = 110 parameters, a root layer of 2*3+3 = 9:
    139 in all, the largest unit 110, the root's own 9."""
    from refbench.bench.sharded_memory import fsdp_units

    assert fsdp_units(Net()) == (139, 110, 9)


def test_memory_per_rank_for_sd35_large_at_8_ranks():
    """SD3.5 Large's transformer, counted from its released config: 8,056,627,520 parameters
    (Stability's "8.1 billion"), its largest joint block 212,999,680, the root's own 39,554,112.
    At 8 ranks, refdpo (two frozen copies):
      policy 16 x 8,056,627,520 / 8 = 16.113 GB; frozen 2 x 4 x 8,056,627,520 / 8 = 8.057 GB;
      gathered (2*2 + 4) x 212,999,680 + 2 x 39,554,112 = 1.783 GB; in all 25.95 GB.
    diff-dpo: one frozen copy, 4.028 GB: 21.92 GB. With the frozen copies offloaded: 17.90 GB.
    One rank (data parallel): 16 + 8 = 24 bytes a parameter, 193.36 GB, nothing gathered."""
    from refbench.bench.sharded_memory import memory_rows, model_units

    assert model_units("sd35-large") == (8_056_627_520, 212_999_680, 39_554_112)
    rows = {(r["method"], r["ranks"]): r for r in memory_rows(models=("sd35-large",))}
    assert rows["refdpo", 8]["per_rank_gb"] == pytest.approx(25.95, abs=0.01)
    assert rows["diff-dpo", 8]["per_rank_gb"] == pytest.approx(21.92, abs=0.01)
    assert rows["refdpo", 1]["per_rank_gb"] == pytest.approx(193.36, abs=0.01)
    offloaded = {(r["method"], r["ranks"]): r for r in memory_rows(models=("sd35-large",), offload_frozen=True)}
    assert offloaded["refdpo", 8]["per_rank_gb"] == pytest.approx(17.90, abs=0.01)


def test_the_memory_table_command_prints_every_model_and_rank_count():
    from typer.testing import CliRunner

    from refbench.cli.app import app

    result = CliRunner().invoke(app, ["bench", "--memory-table"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0] == "| model | parameters | method | 1 rank | 2 ranks | 4 ranks | 8 ranks |"
    assert len(lines) == 2 + 3 * 2  # SDXL, SD3.5 Medium and Large x diff-dpo, refdpo
    assert "| sd35-large | 8.06 B | refdpo | 193.4 GB | 98.5 GB | 50.1 GB | 25.9 GB |" in lines


def test_offloading_frozen_copies_without_fsdp_is_one_line(tmp_path):
    """Checked before anything loads (the pairs are not even looked at)."""
    from refbench.config import load_config
    from refbench.training.trainer import Trainer

    config = load_config(overrides={"model": {"offload_frozen": True}, "training": {"max_steps": 1}})
    with pytest.raises(ConfigError, match="model.offload_frozen .* needs an FSDP launch"):
        Trainer(config, None, tmp_path / "run", None, progress=False)


def test_a_gathered_state_with_views_is_written_as_diffusers_writes_it(tmp_path):
    """FSDP pads a parameter whose first dimension does not divide by the ranks, and the gathered
    tensor is then a view into the padded buffer (the toy UNet's conv_out under 2 ranks): safetensors
    refuses such a tensor. The folder written from such a state loads in plain diffusers with the
    same weights, and its config names UNet2DConditionModel."""
    from diffusers import UNet2DConditionModel

    from refbench.training.run import write_denoiser_folder

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=8,
        attention_head_dim=2,
        norm_num_groups=4,
    )
    state = {k: v.clone() for k, v in unet.state_dict().items()}
    padded = torch.zeros((state["conv_out.weight"].shape[0] + 1, *state["conv_out.weight"].shape[1:]))
    padded[:-1] = state["conv_out.weight"]
    state["conv_out.weight"] = padded[:-1]  # a view that does not cover its storage
    write_denoiser_folder(unet, state, tmp_path / "unet")
    loaded = UNet2DConditionModel.from_pretrained(str(tmp_path / "unet"))
    assert json.loads((tmp_path / "unet" / "config.json").read_text())["_class_name"] == "UNet2DConditionModel"
    assert all(torch.equal(v, unet.state_dict()[k]) for k, v in loaded.state_dict().items())


def test_an_fsdp1_launch_is_refused_before_accelerate_starts(monkeypatch):
    """What `accelerate launch` with fsdp_version 1 sets: refused in one line before accelerate builds
    its FSDP1 plugin (which on a CPU fails with an error of its own)."""
    from refbench.training.sharding import make_accelerator

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "1")
    with pytest.raises(ConfigError, match="FSDP version 1; refbench shards with FSDP2 only"):
        make_accelerator(cpu=True)
