"""modelport: serve trained models over the Open Inference Protocol from an auditable registry.

The public embedding API is `load` and `Model`; importing this package loads nothing heavy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modelport._version import __version__

if TYPE_CHECKING:
    from modelport.serving.embedded import Model, load

__all__ = ["Model", "__version__", "load"]


def __getattr__(name: str) -> Any:
    # Deferred so that `import modelport` stays cheap for the CLI and for embedders.
    if name in ("Model", "load"):
        from modelport.serving import embedded

        return getattr(embedded, name)
    raise AttributeError(f"module 'modelport' has no attribute {name!r}")
