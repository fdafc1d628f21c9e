"""Schedules: static per-worker queues (cost model) and the dynamic ready-queue plan."""
from eventkernel.schedule.static import StaticSchedule, static_schedule, check_deadlock_free
from eventkernel.schedule.dynamic import DynamicPlan, dynamic_plan

__all__ = ["DynamicPlan", "StaticSchedule", "check_deadlock_free", "dynamic_plan",
           "static_schedule"]
