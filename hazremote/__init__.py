"""haz remote — a monorepo task runner with a team-shared remote cache.

The package is layered (see ``docs/architecture.md``): ``domain`` holds pure values,
``config`` turns YAML into them, ``graph`` builds the task graph, and ``cli`` is the thin
entry point. Importing this package is cheap on purpose: ``haz --help`` must start fast.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
