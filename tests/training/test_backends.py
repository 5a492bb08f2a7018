"""The backend registry: each model kind has one backend class, and nothing else asks which kind it has."""

import re
from pathlib import Path

import pytest
from cli_helpers import run_refbench as refbench

from refbench.config import ModelConfig
from refbench.errors import ConfigError
from refbench.model_kinds import MODEL_KINDS
from refbench.training.backends import Backend, backend_class, model_kinds

PACKAGE = Path(__file__).resolve().parents[2] / "refbench"
# The registry: the light table config validates against, and the module that maps kinds to classes.
REGISTRY = {PACKAGE / "model_kinds.py", PACKAGE / "training" / "backends" / "__init__.py"}
KIND_TEST = re.compile(r"\bkind\s*(==|!=)|\bkind\s+(not\s+)?in\s*[(\[{]")


def test_every_kind_has_one_backend_class_of_its_own():
    classes = [backend_class(kind) for kind in MODEL_KINDS]
    assert len(set(classes)) == len(classes)
    for kind, cls in zip(MODEL_KINDS, classes):
        assert issubclass(cls, Backend) and cls.kind == kind
        assert cls.summary and "\n" not in cls.summary
    assert list(model_kinds()) == list(MODEL_KINDS)


def test_model_config_takes_exactly_the_registry_kinds():
    for kind in MODEL_KINDS:
        assert ModelConfig(kind=kind).kind == kind
    with pytest.raises(ConfigError) as error:
        ModelConfig(kind="sd4")
    message = str(error.value)
    assert "\n" not in message and message.startswith("model.kind: ")
    assert message.endswith(f"must be one of {', '.join(MODEL_KINDS)}; got 'sd4'")
    with pytest.raises(ConfigError, match="^model.kind: must be one of toy, toy-flow, sd15, sdxl, sd3; got 'sd4'$"):
        backend_class("sd4")


def test_t5_may_be_left_out_only_where_the_registry_says():
    for kind, entry in MODEL_KINDS.items():
        if entry.t5:
            assert ModelConfig(kind=kind, t5=False).t5 is False
        else:
            with pytest.raises(ConfigError, match="^model.t5: must be true unless model.kind is sd3"):
                ModelConfig(kind=kind, t5=False)


def test_what_each_kind_declares_is_what_the_code_had_before_the_registry():
    """The numbers and folders that used to sit in tables by kind across the package."""
    declared = {
        kind: (cls.flow, cls.denoiser_folder, cls.pipeline_name, cls.default_guidance, cls.analysis_pairs)
        for kind, cls in ((k, backend_class(k)) for k in MODEL_KINDS)
    }
    assert declared == {
        "toy": (False, "unet", "StableDiffusionPipeline", 3.0, 256),
        "toy-flow": (True, "transformer", "StableDiffusion3Pipeline", 3.0, 256),
        "sd15": (False, "unet", "StableDiffusionPipeline", 7.5, 5000),
        "sdxl": (False, "unet", "StableDiffusionXLPipeline", 5.0, 5000),
        "sd3": (True, "transformer", "StableDiffusion3Pipeline", 7.0, 5000),
    }
    assert [k for k in MODEL_KINDS if backend_class(k).full_size is not None] == ["sd15", "sdxl"]


def test_the_toy_latent_cache_fingerprint_names_pixels_and_the_text_encoder():
    from refbench.toy.model import BASE_CHECKPOINT
    from refbench.training.backends.base import weights_digest

    fingerprint = backend_class("toy").encoder_fingerprint(ModelConfig())
    assert fingerprint == {
        "image_encoder": "pixels",
        "text_encoders": weights_digest(str(BASE_CHECKPOINT), ("text_encoder",)),
    }


def test_full_size_is_refused_in_one_line_for_a_kind_without_one():
    from refbench.bench.full_size import parameter_counts

    with pytest.raises(ConfigError, match="^no full-size configuration for sd3; valid: sd15, sdxl$"):
        parameter_counts("sd3")


def test_config_list_prints_every_kind_with_what_it_is(monkeypatch, capsys):
    code, out, _ = refbench(monkeypatch, capsys, "config", "--list")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("methods: ") and lines[1].startswith("presets: ")
    for kind, summary in model_kinds().items():
        assert any(line.split() and line.split()[0] == kind and line.endswith(summary) for line in lines), kind
    # and the objectives, with what the trainer runs for each (written out: sft and mapo need no reference)
    objectives = {
        line.split()[0]: line
        for line in lines[lines.index(next(line for line in lines if line.startswith("objectives"))) + 1 :]
        if line.startswith("  ") and not line.startswith("   ")
    }
    assert {"dpo", "dspo", "kto", "mapo", "sft"} <= set(objectives)
    assert [name for name, line in objectives.items() if "[no reference]" in line] == ["mapo", "sft"]
    assert [name for name, line in objectives.items() if "[winners only]" in line] == ["sft"]


def test_no_code_outside_the_registry_asks_which_kind_it_has():
    """Not even about other things named ``kind``: the grep must stay clean to mean something."""
    found = [
        f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path not in REGISTRY
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if KIND_TEST.search(line)
    ]
    assert not found, "kind tests outside the backend registry:\n" + "\n".join(found)
