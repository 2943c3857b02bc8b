"""Train on Azure ML and deploy to a managed online endpoint, with the azure-ai-ml SDK.

    python deploy/azureml/submit.py train [--no-stream] [--dry-run]
    python deploy/azureml/submit.py deploy --job JOB_NAME [--dry-run]

The Azure ML workspace comes from AZURE_SUBSCRIPTION_ID, AZURE_RESOURCE_GROUP and AZUREML_WORKSPACE_NAME,
or from a config.json downloaded from the portal; sign in with `az login` (DefaultAzureCredential).
Nothing secret is written to disk. --dry-run loads and checks the YAML files and prints what would be
submitted, without signing in.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).parent


def client():
    from azure.ai.ml import MLClient
    from azure.identity import DefaultAzureCredential

    credential = DefaultAzureCredential()
    names = [os.environ.get(k) for k in ("AZURE_SUBSCRIPTION_ID", "AZURE_RESOURCE_GROUP", "AZUREML_WORKSPACE_NAME")]
    if all(names):
        return MLClient(credential, *names)
    return MLClient.from_config(credential)  # raises with a clear message when there is no config.json


def load_training_job():
    from azure.ai.ml import load_job

    path = HERE / "job.yml"
    if not path.exists():
        raise FileNotFoundError("no deploy/azureml/job.yml: this workspace trains elsewhere (compute is not azureml)")
    return load_job(path)


def check_data_path(path: Path) -> None:
    """The SDK's own check of a local uri_file path (create_or_update runs it too), before signing in."""
    from azure.ai.ml.constants import AssetTypes
    from azure.ai.ml.exceptions import ValidationException
    from azure.ai.ml.operations._data_operations import _assert_local_path_matches_asset_type

    try:
        _assert_local_path_matches_asset_type(str(path), AssetTypes.URI_FILE)
    except ValidationException as error:
        raise FileNotFoundError(
            f"{error.message}; set data.path in configs/train.yaml and inputs.data.path in "
            "deploy/azureml/job.yml to your training file"
        ) from None


def train(args) -> int:
    from azure.ai.ml import Input
    from azure.ai.ml.constants import AssetTypes
    from azure.ai.ml.entities import Data

    job = load_training_job()
    # job.yml names the data relative to itself; the SDK resolves a path against the current folder
    data_path = (HERE / job.inputs["data"].path).resolve()
    check_data_path(data_path)
    distribution = type(job.distribution).__name__ if job.distribution else "none"
    print(
        f"job {job.display_name}: {job.resources.instance_count} node(s), distribution {distribution}, "
        f"compute {job.compute}, data {data_path}"
    )
    if args.dry_run:
        return 0
    ml = client()
    data = ml.data.create_or_update(
        Data(
            name=f"{job.display_name}-data",
            path=str(data_path),
            type=AssetTypes.URI_FILE,
            description="training data of the tuneforge workspace",
        )
    )
    job.inputs["data"] = Input(type=AssetTypes.URI_FILE, path=f"azureml:{data.name}:{data.version}")
    submitted = ml.jobs.create_or_update(job)
    print(f"submitted {submitted.name}: {submitted.studio_url}")
    if not args.no_stream:
        ml.jobs.stream(submitted.name)
    print(f"deploy it with: python deploy/azureml/submit.py deploy --job {submitted.name}")
    return 0


def deploy(args) -> int:
    from azure.ai.ml import load_online_deployment, load_online_endpoint
    from azure.ai.ml.constants import AssetTypes
    from azure.ai.ml.entities import Model

    if not (HERE / "endpoint.yml").exists():
        raise FileNotFoundError(
            "no deploy/azureml/endpoint.yml: azureml-endpoint is not among this workspace's targets"
        )
    endpoint = load_online_endpoint(HERE / "endpoint.yml")
    deployment = load_online_deployment(HERE / "deployment.yml")
    source = f"azureml://jobs/{args.job}/outputs/merged" if args.job else "outputs/merged"
    print(
        f"endpoint {endpoint.name}, deployment {deployment.name} on {deployment.instance_count} x "
        f"{deployment.instance_type}, model from {source}"
    )
    if args.dry_run:
        return 0
    ml = client()
    if not args.job and not Path(source).is_dir():
        raise FileNotFoundError("outputs/merged not found: pass --job NAME, or train and merge here first")
    model = ml.models.create_or_update(Model(name=f"{endpoint.name}-model", path=source, type=AssetTypes.CUSTOM_MODEL))
    deployment.model = f"azureml:{model.name}:{model.version}"
    ml.online_endpoints.begin_create_or_update(endpoint).result()
    ml.online_deployments.begin_create_or_update(deployment).result()
    endpoint.traffic = {deployment.name: 100}
    ml.online_endpoints.begin_create_or_update(endpoint).result()
    print(
        f"serving at {ml.online_endpoints.get(endpoint.name).scoring_uri}; key: az ml online-endpoint get-credentials -n {endpoint.name}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    train_parser = commands.add_parser("train", help="register the data, submit the training job, stream its logs")
    train_parser.add_argument("--no-stream", action="store_true")
    deploy_parser = commands.add_parser(
        "deploy", help="register the merged model and serve it from the online endpoint"
    )
    deploy_parser.add_argument("--job", help="the training job whose merged model to deploy (default: outputs/merged)")
    for sub in (train_parser, deploy_parser):
        sub.add_argument("--dry-run", action="store_true", help="check and print, submit nothing")
    args = parser.parse_args(argv)
    try:
        return train(args) if args.command == "train" else deploy(args)
    except ImportError:
        print(
            "error: pip install azure-ai-ml azure-identity (see deploy/azureml/README or the workspace README)",
            file=sys.stderr,
        )
        return 2
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # the SDK's validation errors say which field is wrong
        if "Validation" not in type(error).__name__:
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
