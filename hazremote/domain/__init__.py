"""Pure domain values of the workspace: names, units, path patterns, task references, tasks.

Nothing in this package performs I/O, reads the environment or the clock.
"""
