"""The computational graph: a linear order of nodes ``x_k = f_k(parents)``.

A :class:`Graph` is what the tracer records when it runs a function on symbolic arrays. Nodes are
stored in the order they were created, which is a topological order (a parent always comes before
its children); the order is deterministic because the tracer executes the user's Python code once,
top to bottom. Every node has a fixed shape; values are float64.
"""

from __future__ import annotations

import numpy as np

__all__ = ["Node", "Graph"]


class Node:
    """One elementary operation ``x_k = prim(args; attrs)``.

    Attributes
    ----------
    id : int
        Position in the graph's linear order.
    prim : str
        Name of the primitive (``"add"``, ``"sin"``, ``"dot"``, ``"input"``, ``"const"``...).
    args : tuple of int
        Ids of the parents.
    attrs : dict
        Static parameters (an exponent, axes, an index table, a constant's value).
    shape : tuple of int
    """

    __slots__ = ("id", "prim", "args", "attrs", "shape")

    def __init__(self, id, prim, args, attrs, shape):
        self.id = id
        self.prim = prim
        self.args = tuple(args)
        self.attrs = attrs
        self.shape = tuple(shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def __repr__(self):
        return f"Node({self.id}, {self.prim}, args={self.args}, shape={self.shape})"


def attrs_key(attrs: dict):
    """A hashable, deterministic key for a node's static attributes."""
    items = []
    for k in sorted(attrs):
        v = attrs[k]
        if isinstance(v, np.ndarray):
            v = (v.dtype.str, v.shape, v.tobytes())
        elif isinstance(v, float):
            v = ("f", np.float64(v).tobytes())
        items.append((k, v))
    return tuple(items)


class Graph:
    """A traced program: nodes in linear order, input node ids and output node ids.

    Attributes
    ----------
    nodes : list of Node
    inputs : list of int
        Ids of the ``input`` nodes, in argument order.
    outputs : list of int
    input_names : list of str
    """

    def __init__(self, nodes, inputs, outputs, input_names=None):
        self.nodes = nodes
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.input_names = list(input_names) if input_names is not None else [f"x{i}" for i in range(len(self.inputs))]

    # -- structure -----------------------------------------------------------------------------
    @property
    def input_shapes(self):
        return [self.nodes[i].shape for i in self.inputs]

    @property
    def output_shapes(self):
        return [self.nodes[i].shape for i in self.outputs]

    def __len__(self):
        return len(self.nodes)

    def num_ops(self) -> int:
        """Number of operation nodes (inputs and constants excluded)."""
        return sum(1 for n in self.nodes if n.prim not in ("input", "const"))

    def num_scalar_ops(self) -> int:
        """Number of scalar operations if every node were expanded element by element."""
        return sum(n.size for n in self.nodes if n.prim not in ("input", "const"))

    def key(self) -> str:
        """A deterministic hash of the graph (structure, shapes, attributes)."""
        import hashlib

        h = hashlib.sha256()
        for n in self.nodes:
            h.update(repr((n.prim, n.args, n.shape, attrs_key(n.attrs))).encode())
        h.update(repr((self.inputs, self.outputs)).encode())
        return h.hexdigest()

    def pruned(self) -> "Graph":
        """Dead-code elimination: keep the inputs and the nodes the outputs depend on, in order."""
        live = set(self.inputs) | set(self.outputs)
        for n in reversed(self.nodes):
            if n.id in live:
                live.update(n.args)
        remap = {}
        nodes: list = []
        for n in self.nodes:
            if n.id in live:
                remap[n.id] = len(nodes)
                nodes.append(Node(len(nodes), n.prim, [remap[a] for a in n.args], n.attrs, n.shape))
        return Graph(nodes, [remap[i] for i in self.inputs], [remap[o] for o in self.outputs], self.input_names)

    # -- evaluation ----------------------------------------------------------------------------
    def evaluate(self, *inputs, dtype=np.float64):
        """Interpret the graph with numpy (the reference implementation; slow, exact semantics).

        ``dtype=complex`` evaluates it in complex arithmetic (for complex-step checks).
        """
        from ._primitives import PRIMITIVES

        if len(inputs) != len(self.inputs):
            raise TypeError(f"graph takes {len(self.inputs)} inputs; got {len(inputs)}")
        vals = {}
        for i, v in zip(self.inputs, inputs):
            arr = np.asarray(v, dtype=dtype)
            if arr.shape != self.nodes[i].shape:
                arr = arr.reshape(self.nodes[i].shape)
            vals[i] = arr
        for n in self.nodes:
            if n.id in vals:
                continue
            if n.prim == "const":
                vals[n.id] = n.attrs["value"]
            else:
                vals[n.id] = np.asarray(PRIMITIVES[n.prim].impl(*[vals[a] for a in n.args], **n.attrs))
        outs = [np.asarray(vals[o], dtype=dtype).reshape(self.nodes[o].shape) for o in self.outputs]
        return outs

    # -- display -------------------------------------------------------------------------------
    def names(self):
        """Lecture-style names: inputs keep their names, intermediates are a, b, c, ...; a single
        scalar output is called f."""
        used = set(self.input_names)
        names = {}
        for i, nm in zip(self.inputs, self.input_names):
            names[i] = nm
        letters = iter(_letters(used | {"f"}))
        single = len(self.outputs) == 1 and self.nodes[self.outputs[0]].prim not in ("input",)
        for n in self.nodes:
            if n.id in names:
                continue
            if n.prim == "const":
                names[n.id] = _const_str(n.attrs["value"])
            elif single and n.id == self.outputs[0]:
                names[n.id] = "f"
            else:
                names[n.id] = next(letters)
        return names

    def lines(self):
        """The node list as strings ``"a = log x"``, in linear order (constants are inlined)."""
        from ._primitives import format_node

        names = self.names()
        out = []
        for n in self.nodes:
            if n.prim in ("input", "const"):
                continue
            out.append(f"{names[n.id]} = " + format_node(n, [names[a] for a in n.args]))
        return out

    def __str__(self):
        head = ", ".join(
            f"{nm}{list(self.nodes[i].shape) if self.nodes[i].shape else ''}"
            for nm, i in zip(self.input_names, self.inputs)
        )
        names = self.names()
        outs = ", ".join(names[o] for o in self.outputs)
        return f"graph({head}) -> {outs}\n" + "\n".join("  " + s for s in self.lines())

    def __repr__(self):
        return f"<Graph: {len(self.inputs)} inputs, {self.num_ops()} operations, {len(self.outputs)} outputs>"

    def draw(self, ax=None, title=None):
        """Draw the DAG with matplotlib: inputs on the left, one column per depth level."""
        import matplotlib.pyplot as plt

        names = self.names()
        depth = {}
        for n in self.nodes:
            if n.prim == "const":
                continue
            ps = [depth[a] for a in n.args if a in depth]
            depth[n.id] = 0 if n.prim == "input" else 1 + max(ps, default=0)
        cols = {}
        for nid, d in depth.items():
            cols.setdefault(d, []).append(nid)
        pos = {}
        for d, ids in cols.items():
            for r, nid in enumerate(ids):
                pos[nid] = (d, -(r - (len(ids) - 1) / 2))
        if ax is None:
            _, ax = plt.subplots(figsize=(1.8 * (max(cols) + 1) + 1, 2.2 + 0.6 * max(len(v) for v in cols.values())))
        from ._primitives import format_node

        for n in self.nodes:
            if n.id not in pos:
                continue
            x1, y1 = pos[n.id]
            for a in n.args:
                if a in pos:
                    x0, y0 = pos[a]
                    ax.annotate(
                        "", xy=(x1 - 0.18, y1), xytext=(x0 + 0.18, y0), arrowprops=dict(arrowstyle="->", color="0.4")
                    )
            label = names[n.id]
            if n.prim != "input":
                label += "\n" + format_node(n, [names[a] for a in n.args])
            color = "#cfe2f3" if n.prim == "input" else ("#f4cccc" if n.id in self.outputs else "#fff2cc")
            ax.text(
                x1,
                y1,
                label,
                ha="center",
                va="center",
                fontsize=10,
                bbox=dict(boxstyle="round,pad=0.4", fc=color, ec="0.3"),
            )
        ax.set_xlim(-0.6, max(cols) + 0.6)
        ys = [p[1] for p in pos.values()]
        ax.set_ylim(min(ys) - 0.8, max(ys) + 0.8)
        ax.axis("off")
        if title:
            ax.set_title(title)
        return ax


def _letters(exclude):
    import itertools
    import string

    for k in itertools.count(1):
        for tup in itertools.product(string.ascii_lowercase, repeat=k):
            s = "".join(tup)
            if s not in exclude:
                yield s


def _const_str(v):
    v = np.asarray(v)
    if v.ndim == 0:
        f = float(v)
        return str(int(f)) if f.is_integer() and abs(f) < 1e15 else repr(f)
    return f"const{list(v.shape)}"
