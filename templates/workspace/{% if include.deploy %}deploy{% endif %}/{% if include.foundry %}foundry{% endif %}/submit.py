"""Submit the serverless fine-tuning job (finetune.yml) to your Azure AI Foundry project.

    python deploy/foundry/submit.py [--no-stream] [--dry-run]

The project comes from AZURE_SUBSCRIPTION_ID, AZURE_RESOURCE_GROUP and AZUREML_WORKSPACE_NAME (the
project's name), or from a config.json; sign in with `az login`. Run export_chat.py first. --dry-run
checks the job file and the prepared data, and prints what would be submitted, without signing in.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-stream", action="store_true")
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    try:
        from azure.ai.ml import MLClient, load_job
        from azure.identity import DefaultAzureCredential
    except ImportError:
        print("error: pip install azure-ai-ml azure-identity", file=sys.stderr)
        return 2
    for name in ("train.jsonl", "validation.jsonl"):
        if not (HERE.parents[1] / "outputs" / "chat" / name).exists():
            print(f"error: outputs/chat/{name} not found: run python export_chat.py first", file=sys.stderr)
            return 2
    job = load_job(HERE / "finetune.yml")
    print(f"job {job.name}: {job.task} on {job.model.path}, hyperparameters {job.hyperparameters}")
    if args.dry_run:
        return 0
    credential = DefaultAzureCredential()
    names = [os.environ.get(k) for k in ("AZURE_SUBSCRIPTION_ID", "AZURE_RESOURCE_GROUP", "AZUREML_WORKSPACE_NAME")]
    ml = MLClient(credential, *names) if all(names) else MLClient.from_config(credential)
    submitted = ml.jobs.create_or_update(job)
    print(f"submitted {submitted.name}: {submitted.studio_url}")
    if not args.no_stream:
        ml.jobs.stream(submitted.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
