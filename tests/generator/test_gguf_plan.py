"""The gguf target in the plan: its answers checked at generation, and the workspace it renders (the adapter's
GGUF LoRA file only for techniques llama.cpp's LoRA format holds)."""

from __future__ import annotations

import pytest
import yaml

from helpers.project import tuneforge
from tuneforge import catalog
from tuneforge.planning import hardware
from tuneforge.planning.answers import layer
from tuneforge.planning.plan import resolve


def refused(capsys, *args) -> str:
    assert tuneforge(*args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err, err
    return err


@pytest.mark.parametrize(
    "value, words",
    [("", ["gguf_types", "at least one", "gguf_types=Q8_0,Q4_K_M"]), ("Q8_0,Q9_9", ["gguf_types", "Q9_9"])],
)
def test_gguf_types_are_checked_at_generation(tmp_path, capsys, value, words):
    err = refused(
        capsys, "new", tmp_path / "ws", "--defaults", "--set", "targets=pytorch,gguf", "--set", f"gguf_types={value}"
    )
    assert all(word in err for word in words), err
    assert not (tmp_path / "ws").exists()


def test_an_architecture_llama_cpp_cannot_convert_is_refused(tmp_path, capsys, monkeypatch):
    architectures = {name: dict(facts) for name, facts in catalog.load("architectures").items()}
    architectures["llama"]["gguf"] = False
    real = catalog.load
    monkeypatch.setattr(catalog, "load", lambda section: architectures if section == "architectures" else real(section))
    err = refused(
        capsys,
        "new",
        tmp_path / "ws",
        "--defaults",
        "--set",
        "model=llama-3.2-1b-instruct",
        "--set",
        "targets=pytorch,gguf",
    )
    assert "cannot convert llama to GGUF" in err and "targets=pytorch" in err
    assert not (tmp_path / "ws").exists()


@pytest.mark.parametrize("technique", list(catalog.load("techniques")))
def test_the_lora_file_is_promised_only_where_llama_cpp_takes_the_adapter(new_workspace, technique):
    workspace = new_workspace(technique=technique, targets="pytorch,gguf", hardware="cuda", gpu_memory_gb=80)
    readme = (workspace / "README.md").read_text()
    takes = catalog.load("techniques")[technique]["gguf_adapter"]
    assert ("outputs/gguf/adapter/" in readme) == takes
    assert takes == (technique in {"lora", "qlora", "rslora"})  # plain LoRA matrices: no DoRA, IA3 or full weights
    config = yaml.safe_load((workspace / "configs" / "train.yaml").read_text())
    assert config["gguf"]["quantizations"] == catalog.load("targets")["gguf"]["gguf"]["default"]


def test_models_under_a_billion_parameters_default_to_q8_0_alone(tmp_path):
    """A 4-bit GGUF of a small tuned model lost what tuning taught (Gemma 3 270M: 0.95 as Q8_0, 0.35 as Q4_K_M):
    under the catalog's size the default is Q8_0 alone, with the reason; asked for, Q4_K_M is still made."""
    small = catalog.load("targets")["gguf"]["gguf"]["small_models"]
    plan = resolve(layer(({"model": "qwen3-0.6b", "targets": ["pytorch", "gguf"]}, "--set")), dict(hardware.TYPICAL))
    assert plan.values["gguf_types"] == small["default"] == ["Q8_0"]
    assert "4-bit types lose too much" in plan.origins["gguf_types"]
    big = resolve(
        layer(({"model": "llama-3.2-1b-instruct", "targets": ["pytorch", "gguf"]}, "--set")), dict(hardware.TYPICAL)
    )
    assert big.values["gguf_types"] == catalog.load("targets")["gguf"]["gguf"]["default"]
    asked = {"model": "qwen3-0.6b", "targets": ["pytorch", "gguf"], "gguf_types": ["Q8_0", "Q4_K_M"]}
    assert resolve(layer((asked, "--set")), dict(hardware.TYPICAL)).values["gguf_types"] == ["Q8_0", "Q4_K_M"]
