"""Every target's Olive workflow, loaded through Olive's own config classes: the passes and the
execution provider exist in the installed Olive, and the device can host that provider."""

from __future__ import annotations

import json

import pytest

from tuneforge import catalog

TARGETS = catalog.load("targets")
ONNX_TARGETS = catalog.onnx_targets()
NPU = {t for t in ONNX_TARGETS if TARGETS[t]["onnx"]["device"] == "npu"}
PASSES = {  # each target's recipe, in order
    "onnx-cpu": ["ModelBuilder"],
    "onnx-cuda": ["ModelBuilder"],
    "onnx-directml": ["ModelBuilder"],
    "onnx-qnn": [
        "CaptureSplitInfo",
        "ModelBuilder",
        "MatMulNBitsToQDQ",
        "OnnxStaticQuantization",
        "SplitModel",
        "StaticLLM",
        "EPContextBinaryGenerator",
    ],
    "onnx-openvino": ["OpenVINOOptimumConversion", "OpenVINOIoUpdate", "OpenVINOEncapsulation"],
    "onnx-vitisai": ["ModelBuilder", "VitisGenerateModelLLM"],
}


def pass_parameters(pass_type: str, device: str, provider: str) -> set[str]:
    """The parameters the installed Olive's pass accepts on this device and provider."""
    from olive.hardware.accelerator import AcceleratorSpec, Device
    from olive.package_config import OlivePackageConfig

    cls = OlivePackageConfig.load_default_config().import_pass_module(pass_type)
    return set(cls.default_config(AcceleratorSpec(accelerator_type=Device(device), execution_provider=provider)))


@pytest.mark.parametrize("adapter_export", ["merged", "adapters"])
@pytest.mark.parametrize("target", ONNX_TARGETS)
def test_olive_accepts_the_workflow(new_workspace, target, adapter_export):
    from olive.hardware.constants import DEVICE_TO_EXECUTION_PROVIDERS, ExecutionProvider
    from olive.package_config import OlivePackageConfig
    from olive.workflows.run.config import RunConfig

    # a 3.8B model trains on a CPU with 64 GB (its fp32 weights alone are 15 GB)
    workspace = new_workspace(
        targets=f"pytorch,{target}", adapter_export=adapter_export, model="phi-3-mini-4k-instruct", gpu_memory_gb=64
    )
    config = json.loads((workspace / "olive" / f"{target}.json").read_text())
    parsed = RunConfig.parse_file_or_obj(json.loads(json.dumps(config)))  # it rewrites what it is given
    known_passes = OlivePackageConfig.load_default_config().passes
    accelerator = config["systems"]["local_system"]["accelerators"][0]
    device, provider = accelerator["device"], accelerator["execution_providers"][0]
    assert ExecutionProvider(provider) in DEVICE_TO_EXECUTION_PROVIDERS[device]
    assert (device, provider) == (TARGETS[target]["onnx"]["device"], TARGETS[target]["onnx"]["provider"])
    types = [spec["type"] for spec in config["passes"].values() if spec["type"] != "ExtractAdapters"]
    assert types == PASSES[target]
    for name, spec in config["passes"].items():
        assert spec["type"].lower() in known_passes, spec["type"]
        unknown = set(spec) - {"type"} - pass_parameters(spec["type"], device, provider)
        assert not unknown, (spec["type"], unknown)
        assert [p.type.lower() for p in parsed.passes[name]] == [spec["type"].lower()]
    data_configs = {d["name"]: d for d in config.get("data_configs", [])}
    for spec in config["passes"].values():
        if "data_config" in spec:  # calibration comes from the workspace's own data, never a download
            load = data_configs[spec["data_config"]]["load_dataset_config"]
            assert load["data_name"] == "json" and load["data_files"].startswith("outputs/")
    assert parsed.input_model.type.lower() == "hfmodel"
    model = config["input_model"]
    if adapter_export == "adapters" and target not in NPU:
        assert model["adapter_path"] == "outputs/run" and model["model_path"] == "microsoft/Phi-3-mini-4k-instruct"
        assert config["passes"]["adapters"]["type"] == "ExtractAdapters"
    else:
        assert model["model_path"] == "outputs/merged" and "adapters" not in config["passes"]
    assert config["output_dir"] == f"outputs/onnx/{target}" and config["cache_dir"].startswith("outputs/")


def test_the_qnn_calibration_data_is_the_training_split_through_the_chat_template(new_workspace, tmp_path):
    import sys

    workspace = new_workspace(targets="pytorch,onnx-qnn")
    sys.path.insert(0, str(workspace))
    cwd = __import__("os").getcwd()
    try:
        __import__("os").chdir(workspace)
        import yaml
        from optimize import calibration_files, load_workflow, write_calibration

        from finetune.tiny import save_tiny_model

        spec = yaml.safe_load((workspace / "configs" / "smoke.yaml").read_text())["tiny_model"]
        save_tiny_model(spec, "data/sample.jsonl", 400, tmp_path / "model")
        files = calibration_files(load_workflow(workspace / "olive" / "onnx-qnn.json"))
        assert files == ["outputs/calibration.jsonl"]
        write_calibration(files[0], str(tmp_path / "model"))
        rows = [json.loads(line) for line in (workspace / files[0]).read_text().splitlines()]
    finally:
        __import__("os").chdir(cwd)
        sys.path.remove(str(workspace))
        for name in [m for m in sys.modules if m in ("optimize", "finetune") or m.startswith("finetune.")]:
            del sys.modules[name]
    assert len(rows) == 22  # the 24 samples less the held-out tenth
    assert all(r["text"].startswith("<|im_start|>system\n") and "<|im_start|>assistant\n" in r["text"] for r in rows)


def test_optimize_precision_override_for_cuda_fp16_and_never_a_silent_empty_model(new_workspace, monkeypatch):
    """fp16 is a GPU target's; asked of the CPU one it is refused by name, and a run in which Olive makes no model
    (it prunes a pass it judges invalid and returns without an error) is an error, never "optimized"."""
    import sys

    workspace = new_workspace(targets="pytorch,onnx-cpu,onnx-cuda")
    monkeypatch.chdir(workspace)
    sys.path.insert(0, str(workspace))
    try:
        import optimize

        config = optimize.load_workflow(workspace / "olive" / "onnx-cuda.json", precision="fp16")
        with pytest.raises(
            FileNotFoundError, match="onnx-cpu runs on the CPU, where the model builder makes int4 or fp32"
        ):
            optimize.run(workspace / "olive" / "onnx-cpu.json", precision="fp16")
        monkeypatch.setattr(optimize, "check_inputs", lambda config: None)
        monkeypatch.setattr(optimize, "olive_run", lambda config: None)  # as Olive does with a pruned pass
        with pytest.raises(FileNotFoundError, match=r"onnx-cpu: Olive made no model in outputs/onnx/onnx-cpu-fp32; "):
            optimize.run(workspace / "olive" / "onnx-cpu.json", precision="fp32")
    finally:
        sys.path.remove(str(workspace))
        for name in [m for m in sys.modules if m in ("optimize", "finetune") or m.startswith("finetune.")]:
            del sys.modules[name]
    assert config["passes"]["builder"]["precision"] == "fp16"
    assert config["output_dir"] == "outputs/onnx/onnx-cuda-fp16"


RUNTIME_FILES = {t: TARGETS[t]["runtime"]["platform"] for t in ONNX_TARGETS if "runtime" in TARGETS[t]}


@pytest.fixture(scope="module")
def every_target(tmp_path_factory):
    from helpers.project import tuneforge

    dest = tmp_path_factory.mktemp("targets") / "ws"
    assert tuneforge("new", dest, "--defaults", "--set", "targets=pytorch," + ",".join(ONNX_TARGETS)) == 0
    return dest


def runtime_requirements(path):
    """(platform, pinned requirements) of an olive/requirements-<target>.txt."""
    from packaging.requirements import Requirement

    text = path.read_text()
    platform = next(line.split()[2] for line in text.splitlines() if line.startswith("# platform:"))
    return platform, [Requirement(line) for line in text.splitlines() if line and not line.startswith("#")]


def test_targets_that_run_elsewhere_have_a_pinned_runtime_of_the_model_builders_version(every_target):
    """The runtime that loads the model is the version whose model builder made it (0.14.1)."""
    from packaging.requirements import Requirement

    found = {
        p.name.removeprefix("requirements-").removesuffix(".txt")
        for p in (every_target / "olive").glob("requirements-*")
    }
    assert found == set(RUNTIME_FILES)
    main = {
        r.name: r
        for r in (
            Requirement(line.split("#")[0])
            for line in (every_target / "requirements.txt").read_text().splitlines()
            if line.split("#")[0].strip()
        )
    }
    builder = next(r.specifier for name, r in main.items() if name.startswith("onnxruntime-genai"))
    for target, expected_platform in RUNTIME_FILES.items():
        platform, pins = runtime_requirements(every_target / "olive" / f"requirements-{target}.txt")
        assert platform == expected_platform
        assert all(len(r.specifier) == 1 and next(iter(r.specifier)).operator == "==" for r in pins), pins
        genai = [r for r in pins if r.name.startswith("onnxruntime-genai")]
        assert len(genai) == 1 and genai[0].specifier == builder, (target, genai)


@pytest.mark.slow
@pytest.mark.parametrize("target", list(RUNTIME_FILES))
def test_pip_resolves_each_runtime_on_its_platform(every_target, target, tmp_path):
    """Asks the package index (pip's own resolver, no install) whether the pinned set installs on the
    platform that target runs on; needs the index that installs the rest of the suite's environment."""
    import subprocess
    import sys

    platform, _ = runtime_requirements(every_target / "olive" / f"requirements-{target}.txt")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--ignore-installed",
            "--quiet",
            "--platform",
            platform,
            "--python-version",
            "3.11",
            "--only-binary=:all:",
            "--target",
            str(tmp_path / "t"),
            "-r",
            str(every_target / "olive" / f"requirements-{target}.txt"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
