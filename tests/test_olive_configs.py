"""Every target's Olive workflow, loaded through Olive's own config classes: the passes and the
execution provider exist in the installed Olive, and the device can host that provider."""

from __future__ import annotations

import json

import pytest

ONNX_TARGETS = ["onnx-cpu", "onnx-cuda", "onnx-directml", "onnx-qnn", "onnx-openvino", "onnx-vitisai"]


NPU = {"onnx-qnn", "onnx-openvino", "onnx-vitisai"}
PASSES = {  # each target's recipe, in order
    "onnx-cpu": ["ModelBuilder"], "onnx-cuda": ["ModelBuilder"], "onnx-directml": ["ModelBuilder"],
    "onnx-qnn": ["CaptureSplitInfo", "ModelBuilder", "MatMulNBitsToQDQ", "OnnxStaticQuantization", "SplitModel", "StaticLLM",
                 "EPContextBinaryGenerator"],
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

    workspace = new_workspace(targets=f"pytorch,{target}", adapter_export=adapter_export, model="phi-3-mini-4k-instruct")
    config = json.loads((workspace / "olive" / f"{target}.json").read_text())
    parsed = RunConfig.parse_file_or_obj(json.loads(json.dumps(config)))  # it rewrites what it is given
    known_passes = OlivePackageConfig.load_default_config().passes
    accelerator = config["systems"]["local_system"]["accelerators"][0]
    device, provider = accelerator["device"], accelerator["execution_providers"][0]
    assert ExecutionProvider(provider) in DEVICE_TO_EXECUTION_PROVIDERS[device]
    assert (device == "npu") == (target in NPU)
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

        from finetune.tiny import save_tiny_model
        from optimize import calibration_files, load_workflow, write_calibration

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


def test_optimize_precision_override_for_cuda_fp16(new_workspace):
    import sys

    workspace = new_workspace(targets="pytorch,onnx-cuda")
    sys.path.insert(0, str(workspace))
    try:
        from optimize import load_workflow

        config = load_workflow(workspace / "olive" / "onnx-cuda.json", precision="fp16")
    finally:
        sys.path.remove(str(workspace))
        sys.modules.pop("optimize", None)
    assert config["passes"]["builder"]["precision"] == "fp16"
    assert config["output_dir"] == "outputs/onnx/onnx-cuda-fp16"
