"""The search: genomes, heuristic seeds, the NSGA-II engine, the run driver, and `ecad.search(...)`.

`ecad.search` is both this package and the function that runs a search (ecad.search.api.search):
the package is callable, so `ecad.search(space=..., population=12)` works whether or not a
submodule such as `ecad.search.run` was imported first (which binds the name to the package).
"""

import sys
import types


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        from ecad.search.api import search

        return search(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
