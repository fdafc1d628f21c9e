"""Task types: one module per task type, each holding its lowering (tile grid, regions,
cost), its CPU twin and its CUDA binding (template and Args), declared as a
:class:`~eventkernel.tasks.task_type.TaskType`.

Adding a task type is one module here, one header under ``cuda/include/tasks/`` and one
line in :data:`TASK_TYPES` (see ``docs/adding-a-task.md``).
"""
from __future__ import annotations

from eventkernel.ir.graph import OpKind
from eventkernel.tasks.argmax import ARGMAX
from eventkernel.tasks.attention import ATTENTION, ATTN_MERGE
from eventkernel.tasks.common import Step
from eventkernel.tasks.embedding import EMBEDDING
from eventkernel.tasks.gather import GATHER
from eventkernel.tasks.expert_linear import EXPERT_LINEAR
from eventkernel.tasks.linear import LINEAR
from eventkernel.tasks.moe_combine import MOE_COMBINE
from eventkernel.tasks.moe_route import MOE_ROUTE
from eventkernel.tasks.rmsnorm import RMSNORM
from eventkernel.tasks.rope_append import ROPE_APPEND
from eventkernel.tasks.silu_mul import SILU_MUL
from eventkernel.tasks.task_type import Arg, Lowered, NotOnGpu, TaskType, Twin

__all__ = ["GROUP_AXES", "TASK_TYPES", "TASKS", "TWINS", "Arg", "Lowered", "NotOnGpu", "Step", "TaskType",
           "lowering_of", "task_type"]

# The registry, in pipeline order of a decoder step.
TASK_TYPES: tuple[TaskType, ...] = (
    EMBEDDING, RMSNORM, LINEAR, ROPE_APPEND, ATTENTION, ATTN_MERGE, SILU_MUL, GATHER, ARGMAX,
    MOE_ROUTE, EXPERT_LINEAR, MOE_COMBINE,
)

TASKS: dict[str, TaskType] = {t.name: t for t in TASK_TYPES}
TWINS: dict[str, Twin] = {t.name: t.twin for t in TASK_TYPES}
GROUP_AXES: dict[str, int | None] = {t.name: t.group_axis for t in TASK_TYPES}
_BY_OP: dict[OpKind, TaskType] = {t.op: t for t in TASK_TYPES if t.op is not None}
# NOTE: one task type per name and one lowering per op kind (tests/cpu/test_tasks.py).


def task_type(name: str) -> TaskType:
    """The task type of ``TaskGrid.task_type`` ``name``."""
    if name not in TASKS:
        raise KeyError(f"unknown task type {name!r}; registered: {', '.join(TASKS)}")
    return TASKS[name]


def lowering_of(kind: OpKind) -> TaskType:
    """The task type whose lowering cuts ops of ``kind``."""
    if kind not in _BY_OP:
        raise KeyError(f"no task type lowers {kind.value!r} ops; add one to eventkernel.tasks")
    return _BY_OP[kind]
