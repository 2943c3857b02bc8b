"""Azure ML, Azure AI Foundry serverless and KAITO files of a generated workspace, validated offline by the
platforms' own loaders (azure-ai-ml) or their schemas and admission rules; the scoring script runs locally."""

from __future__ import annotations

import copy
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers.platform_rules import kaito_admission_errors, schema_errors, training_config_of
from helpers.workspace import jsonc
from tuneforge import catalog

GPU = {"hardware": "cuda", "gpu_memory_gb": 80}
KAITO_PRESETS = {f["kaito"]["preset"] for f in catalog.load("models").values() if f.get("kaito")}


def run_python(workspace: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=workspace, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.mark.parametrize(
    "answers, command, nodes",
    [
        ({}, "python train.py", 1),
        ({"gpu_count": 4, "distributed": "ddp"}, "bash launch.sh", 1),
        ({"gpu_count": 4, "num_nodes": 2, "distributed": "deepspeed-zero3"}, "bash launch.sh", 2),
        ({"gpu_count": 8, "num_nodes": 4, "distributed": "fsdp", "technique": "full"}, "bash launch.sh", 4),
    ],
)
def test_azureml_job_loads_with_the_answers_distribution(new_workspace, answers, command, nodes):
    from azure.ai.ml import load_job

    workspace = new_workspace(**GPU, compute="azureml", targets="pytorch", **answers)
    job = load_job(workspace / "deploy" / "azureml" / "job.yml")
    assert type(job).__name__ == "Command"
    assert job.resources.instance_count == nodes
    assert (job.distribution is None) == (answers.get("distributed") is None)
    if job.distribution is not None:
        assert job.distribution.type == "pytorch" and job.distribution.process_count_per_instance == 1
    assert job.command.startswith(command) and "${{outputs.merged}}" in job.command
    folder = workspace / "deploy" / "azureml"  # paths in the file are relative to it
    assert (folder / job.code).resolve() == workspace.resolve()
    assert job.inputs["data"].type == "uri_file"
    assert (folder / job.inputs["data"].path).resolve() == (workspace / "data" / "sample.jsonl").resolve()
    assert set(job.outputs) == {"model", "merged"}
    conda = yaml.safe_load((workspace / "deploy" / "azureml" / "conda.yml").read_text())
    pins = conda["dependencies"][-1]["pip"]
    requirements = [
        line.split("  #")[0]
        for line in (workspace / "requirements.txt").read_text().splitlines()
        if line and not line.startswith(("#", "pytest", "azure-"))
    ]
    assert pins == requirements  # the job runs with exactly the workspace's pins
    dry = run_python(workspace, "deploy/azureml/submit.py", "train", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"{nodes} node(s)" in dry.stdout


def test_azureml_submit_finds_the_data_from_any_folder_through_the_sdks_own_check(new_workspace):
    workspace = new_workspace(compute="azureml", hardware="cuda", gpu_memory_gb=80)
    data = (workspace / "data" / "sample.jsonl").resolve()
    for cwd in (workspace, workspace / "deploy" / "azureml", workspace.parent):
        dry = subprocess.run(
            [sys.executable, str(workspace / "deploy" / "azureml" / "submit.py"), "train", "--dry-run"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert dry.returncode == 0, dry.stderr
        assert f"data {data}" in dry.stdout
    data.unlink()
    dry = run_python(workspace, "deploy/azureml/submit.py", "train", "--dry-run")
    assert dry.returncode == 2 and "File path does not match asset type uri_file" in dry.stderr
    assert "Traceback" not in dry.stderr


def test_azureml_endpoint_and_deployment_load(new_workspace):
    from azure.ai.ml import load_online_deployment, load_online_endpoint

    workspace = new_workspace(**GPU, compute="azureml", targets="pytorch,azureml-endpoint", project_name="Plant_Care")
    folder = workspace / "deploy" / "azureml"
    endpoint = load_online_endpoint(folder / "endpoint.yml")
    deployment = load_online_deployment(folder / "deployment.yml")
    assert endpoint.name == "plant-care-ep" and endpoint.auth_mode == "key"
    assert deployment.endpoint_name == endpoint.name
    assert deployment.code_configuration.scoring_script == "score.py" and (folder / "score.py").is_file()
    assert deployment.model.endswith("plant-care-ep-model@latest")
    dry = run_python(workspace, "deploy/azureml/submit.py", "deploy", "--dry-run")
    assert dry.returncode == 0 and "endpoint plant-care-ep" in dry.stdout, dry.stderr


def test_azureml_files_are_absent_unless_chosen(new_workspace):
    workspace = new_workspace(targets="pytorch")
    assert not (workspace / "deploy").exists() and not (workspace / ".amlignore").exists()
    endpoint_only = new_workspace(targets="pytorch,azureml-endpoint")
    files = sorted(p.name for p in (endpoint_only / "deploy" / "azureml").iterdir())
    assert files == ["conda.yml", "deployment.yml", "endpoint.yml", "score.py", "submit.py"]
    dry = run_python(endpoint_only, "deploy/azureml/submit.py", "train", "--dry-run")
    assert dry.returncode == 2 and "compute is not azureml" in dry.stderr


def test_the_scoring_script_answers_and_rejects_bad_requests(new_workspace, tmp_path, monkeypatch):
    workspace = new_workspace(targets="pytorch,azureml-endpoint")
    sys.path.insert(0, str(workspace))
    try:
        from finetune.tiny import save_tiny_model

        spec = yaml.safe_load((workspace / "configs" / "smoke.yaml").read_text())
        save_tiny_model(
            spec["tiny_model"], str(workspace / "data" / "sample.jsonl"), 400, tmp_path / "model" / "merged" / "1"
        )
    finally:
        sys.path.remove(str(workspace))
        for name in [m for m in sys.modules if m == "finetune" or m.startswith("finetune.")]:
            del sys.modules[name]
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(tmp_path / "model"))
    loader = importlib.util.spec_from_file_location("score", workspace / "deploy" / "azureml" / "score.py")
    score = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(score)
    score.init()
    answer = score.run(json.dumps({"messages": [{"role": "user", "content": "Water?"}], "max_new_tokens": 5}))
    assert answer["choices"][0]["message"]["role"] == "assistant"
    assert isinstance(answer["choices"][0]["message"]["content"], str)
    assert 1 <= answer["usage"]["completion_tokens"] <= 5 and answer["usage"]["prompt_tokens"] > 3
    for bad, reason in [
        ("not json", "Expecting value"),
        ("[]", "JSON object"),
        ('{"messages": []}', "non-empty list"),
        ('{"messages": [{"role": "robot", "content": "hi"}]}', "role"),
        ('{"messages": [{"role": "user", "content": "hi"}], "max_new_tokens": 0}', "max_new_tokens"),
    ]:
        assert reason in score.run(bad)["error"], bad


def test_foundry_job_loads_and_export_chat_writes_checked_data(new_workspace):
    from azure.ai.ml import load_job

    workspace = new_workspace(
        **GPU,
        model="phi-3.5-mini-instruct",
        technique="lora",
        compute="foundry-serverless",
        targets="pytorch",
        scenario="classification",
        learning_rate=1e-4,
        num_train_epochs=2,
    )
    export = run_python(workspace, "export_chat.py")
    assert export.returncode == 0, export.stderr
    rows = [json.loads(line) for line in (workspace / "outputs" / "chat" / "train.jsonl").read_text().splitlines()]
    assert len(rows) == 29 and all(
        r["messages"][0]["role"] == "system" and r["messages"][-1]["role"] == "assistant" for r in rows
    )
    assert rows[0]["messages"][1]["content"].startswith("Label this customer message as one of:")
    job = load_job(workspace / "deploy" / "foundry" / "finetune.yml")
    assert type(job).__name__ == "CustomModelFineTuningJob"
    assert job.task == "chatCompletion"
    assert job.model.path == "azureml://registries/azureml/models/Phi-3.5-mini-instruct/labels/latest"
    assert job.hyperparameters == {
        "num_train_epochs": "2",
        "per_device_train_batch_size": "4",
        "learning_rate": "0.0001",
    }
    folder = workspace / "deploy" / "foundry"
    assert (folder / job.training_data.path).resolve() == (workspace / "outputs" / "chat" / "train.jsonl").resolve()
    dry = run_python(workspace, "deploy/foundry/submit.py", "--dry-run")
    assert dry.returncode == 0, dry.stderr


def test_export_chat_names_what_the_services_would_reject(new_workspace):
    workspace = new_workspace(
        **GPU, model="phi-3.5-mini-instruct", technique="lora", compute="foundry-serverless", targets="pytorch"
    )
    sample = workspace / "data" / "sample.jsonl"
    lines = sample.read_text().splitlines()
    sample.write_text("\n".join(lines[:6]) + "\n")
    few = run_python(workspace, "export_chat.py")
    assert few.returncode == 2 and "training examples; the service needs at least 10" in few.stderr
    bad = {
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "system", "content": "late"},
        ]
    }
    sample.write_text("\n".join(lines[:20] + [json.dumps(bad)]) + "\n")
    late = run_python(workspace, "export_chat.py")
    assert late.returncode == 2 and "data/sample.jsonl:21: a system message may only come first" in late.stderr


def test_foundry_refuses_plain_text(capsys, tmp_path):
    from helpers.project import tuneforge

    assert (
        tuneforge(
            "new",
            tmp_path / "x",
            "--defaults",
            "--set",
            "hardware=cuda",
            "--set",
            "model=phi-3.5-mini-instruct",
            "--set",
            "compute=foundry-serverless",
            "--set",
            "technique=lora",
            "--set",
            "dataset_format=text",
        )
        == 2
    )
    assert "serverless fine-tuning takes chat examples" in capsys.readouterr().err


@pytest.mark.parametrize("technique", ["lora", "qlora"])
def test_kaito_workspaces_pass_the_crd_schema_and_admission_rules(new_workspace, technique):
    workspace = new_workspace(
        **GPU,
        model="phi-3.5-mini-instruct",
        technique=technique,
        compute="kaito",
        targets="pytorch,kaito",
        lora_r=8,
        learning_rate=5e-5,
    )
    folder = workspace / "deploy" / "kaito"
    configmap = yaml.safe_load((folder / "tuning-config.yaml").read_text())
    training = training_config_of(configmap)["training_config"]
    assert training["LoraConfig"]["r"] == 8 and training["TrainingArguments"]["learning_rate"] == 5e-5
    assert ("QuantizationConfig" in training) == (technique == "qlora")
    tuning = yaml.safe_load((folder / "tuning-workspace.yaml").read_text())
    inference = yaml.safe_load((folder / "inference-workspace.yaml").read_text())
    assert tuning["tuning"]["config"] == configmap["metadata"]["name"]
    assert tuning["tuning"]["method"] == technique and tuning["tuning"]["preset"]["name"] == "phi-3.5-mini-instruct"
    for document, config in ((tuning, configmap), (inference, None)):
        assert schema_errors(document, "kaito-workspace-v1beta1.schema.json") == []
        assert kaito_admission_errors(document, config and training_config_of(config), KAITO_PRESETS) == []


def test_the_kaito_checks_catch_what_kaito_would_reject(new_workspace):
    workspace = new_workspace(
        **GPU, model="phi-3.5-mini-instruct", technique="qlora", compute="kaito", targets="pytorch"
    )
    folder = workspace / "deploy" / "kaito"
    tuning = yaml.safe_load((folder / "tuning-workspace.yaml").read_text())
    config = training_config_of(yaml.safe_load((folder / "tuning-config.yaml").read_text()))
    two_inputs = copy.deepcopy(tuning)
    two_inputs["tuning"]["input"]["image"] = "registry/data:1"
    assert "tuning.input needs exactly one" in kaito_admission_errors(two_inputs, config, KAITO_PRESETS)[0]
    no_bits = copy.deepcopy(config)
    del no_bits["training_config"]["QuantizationConfig"]
    assert kaito_admission_errors(tuning, no_bits, KAITO_PRESETS) == [
        "qlora needs QuantizationConfig with load_in_4bit or load_in_8bit"
    ]
    as_lora = copy.deepcopy(tuning)
    as_lora["tuning"]["method"] = "lora"
    assert kaito_admission_errors(as_lora, config, KAITO_PRESETS) == [
        "lora must not load the model in 4 or 8 bits (that is qlora)"
    ]
    unknown = copy.deepcopy(tuning)
    unknown["tuning"]["preset"]["name"] = "gpt-5"
    assert "preset 'gpt-5' is not one of KAITO's presets" in kaito_admission_errors(unknown, config, KAITO_PRESETS)
    typo = copy.deepcopy(tuning)
    typo["tuning"]["outptu"] = typo["tuning"].pop("output")
    assert any("outptu" in e for e in schema_errors(typo, "kaito-workspace-v1beta1.schema.json"))


@pytest.mark.parametrize("hardware", ["cpu", "cuda"])
def test_dev_container_passes_its_schema(new_workspace, hardware):
    container = jsonc(new_workspace(hardware=hardware, gpu_memory_gb=24) / ".devcontainer" / "devcontainer.json")
    assert schema_errors(container, "devcontainer.schema.json") == []
    assert schema_errors({**container, "hostRequirement": {"gpu": True}}, "devcontainer.schema.json")  # a typo fails


def test_readme_has_a_section_per_platform(new_workspace):
    workspace = new_workspace(
        **GPU,
        model="phi-3.5-mini-instruct",
        technique="lora",
        compute="kaito",
        targets="pytorch,kaito,azureml-endpoint",
    )
    readme = (workspace / "README.md").read_text()
    assert "## Azure ML online endpoint" in readme and "## KAITO on AKS" in readme and "quota" in readme.lower()
    for command in (
        "python deploy/azureml/submit.py deploy",
        "envsubst < deploy/kaito/tuning-workspace.yaml | kubectl apply -f -",
        "envsubst < deploy/kaito/inference-workspace.yaml | kubectl apply -f -",
    ):
        assert command in readme
