"""Compatibility for extensions written for another web UI: ``from modules.logging_colors import logger``.

Only this import is provided; new extensions should use ``modules.extension_api.logger(name)``.
"""
from __future__ import annotations

import logging

logger = logging.getLogger("extensions")
