"""Tracing automatic differentiation.

Run a plain numpy function on symbolic arrays (:func:`trace`), get its computational graph in a
deterministic linear order, transform it (forward mode :func:`jvp_graph`, reverse mode
:func:`vjp_graph`, composable to any order) and compile any graph to numba kernels cached on disk.

Public entry points: :func:`grad`, :func:`value_and_grad`, :func:`jvp`, :func:`vjp`, :func:`hvp`
(alias :func:`hessian_vector_product`), :func:`trace`, :func:`trace_dynamics`, :func:`logsumexp`,
and :func:`compile_field` / :func:`compile_cost`, which ``adjoint.vector_field`` and ``adjoint.cost``
wrap into ``adjoint.Dynamics`` / ``adjoint.Cost``. This package imports nothing from the ODE core
(``tests/test_import_graph.py``): it is the lower layer.
"""

from ._api import (
    CompiledCost,
    CompiledField,
    CompiledGraph,
    TracedCost,
    TracedDynamics,
    compile_cost,
    compile_field,
    compile_graph,
    compile_vector,
    grad,
    hessian_vector_product,
    hvp,
    jvp,
    trace_cost,
    trace_dynamics,
    value_and_grad,
    vjp,
)
from ._codegen import cache_dir, emit_lines
from ._dispatch import logsumexp
from ._graph import Graph, Node
from ._primitives import PRIMITIVES
from ._tracer import TraceError, Tracer
from ._tracing import trace
from ._transforms import bind_inputs, jvp_graph, replay, select_outputs, vjp_graph

__all__ = [
    "compile_field",
    "compile_vector",
    "compile_cost",
    "CompiledField",
    "CompiledCost",
    "grad",
    "value_and_grad",
    "jvp",
    "vjp",
    "hvp",
    "hessian_vector_product",
    "trace",
    "trace_dynamics",
    "trace_cost",
    "logsumexp",
    "TraceError",
    "Graph",
    "Node",
    "Tracer",
    "TracedDynamics",
    "TracedCost",
    "CompiledGraph",
    "compile_graph",
    "jvp_graph",
    "vjp_graph",
    "bind_inputs",
    "select_outputs",
    "replay",
    "emit_lines",
    "cache_dir",
    "PRIMITIVES",
]
