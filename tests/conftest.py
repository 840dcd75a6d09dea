"""Suite-wide configuration: hypothesis profiles (a bounded ``ci`` profile is the default) and
a private ``XDG_STATE_HOME``."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

from hypothesis import HealthCheck, settings

# haz keeps a per-user secret for its workspace snapshots under XDG_STATE_HOME: tests (and
# the haz processes they start) get their own, never the real home's.
_STATE_HOME = tempfile.mkdtemp(prefix="haz-test-state-")
os.environ["XDG_STATE_HOME"] = _STATE_HOME
atexit.register(shutil.rmtree, _STATE_HOME, True)

settings.register_profile(
    "ci",
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
settings.register_profile("dev", max_examples=500, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
