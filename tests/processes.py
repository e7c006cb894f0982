"""The environment for every process a test starts (app servers, start scripts, benchmarks, writers)."""
from __future__ import annotations

import os

# torch's OpenMP threads spin while they wait unless this is set before torch is imported; on two
# shared cores the test process, servers and a browser then steal each other's time.
PASSIVE = {"OMP_WAIT_POLICY": "PASSIVE"}


def child_env(base: dict[str, str] | None = None, **extra: str) -> dict[str, str]:
    """``base`` (default: this process's environment) with OMP_WAIT_POLICY=PASSIVE and ``extra``."""
    return {**(os.environ if base is None else base), **PASSIVE, **extra}
