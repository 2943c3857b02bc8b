"""The workspace's own modules (finetune/, train.py, ...) import here as they do in a workspace: the template's
folder is on the import path for every test of this folder, set once before any of them is imported. A module
rendered only for some choices (`finetune/{% if include.preference %}losses.py{% endif %}`) imports under the
name a workspace with that choice gives it (`finetune.losses`)."""

import importlib.abc
import importlib.util
import sys
from importlib.machinery import SourceFileLoader

from helpers.project import WORKSPACE_TEMPLATE


class ConditionalModules(importlib.abc.MetaPathFinder):
    """Finds finetune.NAME in the template's conditionally named NAME.py, after the ordinary finders."""

    def find_spec(self, fullname, path=None, target=None):
        package, _, name = fullname.rpartition(".")
        if package != "finetune":
            return None
        found = [
            p for p in (WORKSPACE_TEMPLATE / "finetune").glob("{%*") if p.name.endswith(f"%}}{name}.py{{% endif %}}")
        ]
        if len(found) != 1:
            return None
        loader = SourceFileLoader(fullname, str(found[0]))
        return importlib.util.spec_from_loader(fullname, loader, origin=str(found[0]))


sys.path.insert(0, str(WORKSPACE_TEMPLATE))
sys.meta_path.append(ConditionalModules())
