"""The workspace's own modules (finetune/, train.py, ...) import here as they do in a workspace: the template's
folder is on the import path for every test of this folder, set once before any of them is imported."""

import sys

from helpers.project import WORKSPACE_TEMPLATE

sys.path.insert(0, str(WORKSPACE_TEMPLATE))
