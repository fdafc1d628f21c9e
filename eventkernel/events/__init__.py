"""Event tensors: derivation from task regions, binding to shapes, verification."""
from eventkernel.events.bind import BoundEvents, bind_events
from eventkernel.events.derive import EventPlan, derive_events
from eventkernel.events.tensor import CSR, EventTensor, IndexMap, WaitCount

__all__ = ["BoundEvents", "CSR", "EventPlan", "EventTensor", "IndexMap", "WaitCount",
           "bind_events", "derive_events"]
