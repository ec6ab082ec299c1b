"""What task code may call, all optional: ``context``, ``report``, ``heartbeat``, ``checkpoint``.

Importing this costs nothing heavy: no framework is imported until a checkpoint needs it.
"""

from cauce.runtime import checkpoint
from cauce.runtime._context import Context, context
from cauce.runtime._report import TrialPruned, heartbeat, report

__all__ = ["Context", "TrialPruned", "checkpoint", "context", "heartbeat", "report"]
