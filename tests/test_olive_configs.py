"""Every target's Olive workflow, loaded through Olive's own config classes: the passes and the
execution provider exist in the installed Olive, and the device can host that provider."""

from __future__ import annotations

import json

import pytest

ONNX_TARGETS = ["onnx-cpu", "onnx-cuda", "onnx-directml", "onnx-qnn", "onnx-openvino", "onnx-vitisai"]


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
    for name, spec in config["passes"].items():
        assert spec["type"].lower() in known_passes, spec["type"]
    assert [p.type.lower() for p in parsed.passes["builder"]] == ["modelbuilder"]
    assert parsed.input_model.type.lower() == "hfmodel"
    for accelerator in config["systems"]["local_system"]["accelerators"]:
        for provider in accelerator["execution_providers"]:
            assert ExecutionProvider(provider) in DEVICE_TO_EXECUTION_PROVIDERS[accelerator["device"]]
    model = config["input_model"]
    if adapter_export == "adapters":
        assert model["adapter_path"] == "outputs/run" and model["model_path"] == "microsoft/Phi-3-mini-4k-instruct"
        assert config["passes"]["adapters"]["type"] == "ExtractAdapters"
    else:
        assert model["model_path"] == "outputs/merged" and "adapters" not in config["passes"]
    assert config["output_dir"] == f"outputs/onnx/{target}" and config["cache_dir"].startswith("outputs/")


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
