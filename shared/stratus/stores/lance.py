"""Importing LanceDB without the REST namespace client it loads eagerly (a cold-start cost)."""

from __future__ import annotations

import importlib.util
import sys
import types

REST_CLIENT = "lance_namespace_urllib3_client"


def skip_rest_namespace_client() -> None:
    """Let `import lancedb` skip the REST namespace client's package init (every API class, ~0.7 s).

    lancedb imports lance_namespace, which imports only the client's `models` subpackage, but Python
    runs the client package's __init__ first, and that imports all of its API modules. Stratus opens
    tables by URI and never uses a REST namespace, so the package is registered without running its
    __init__; its submodules still import normally from the real folder.
    """
    if REST_CLIENT in sys.modules:
        return
    spec = importlib.util.find_spec(REST_CLIENT)
    if spec is None or spec.submodule_search_locations is None:
        return
    package = types.ModuleType(REST_CLIENT)
    package.__path__ = list(spec.submodule_search_locations)
    package.__spec__ = spec
    package.__file__ = spec.origin
    sys.modules[REST_CLIENT] = package
