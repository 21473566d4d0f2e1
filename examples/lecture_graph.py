"""The lecture's example f(x, y) = y log x + sqrt(y log x): trace, print, draw, differentiate."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import adjoint.ad as ad  # noqa: E402


def f(x, y):
    return y * np.log(x) + np.sqrt(y * np.log(x))


g = ad.trace(f, 2.0, 3.0)
print("\n".join(g.lines()))  # a = log x, b = y a, c = sqrt b, f = b + c
print("forward-mode tangent graph:\n", ad.jvp_graph(g, wrt=[0]))
print("reverse-mode adjoint graph:\n", ad.vjp_graph(g))
print("grad:", ad.grad(f, argnums=(0, 1))(2.0, 3.0))
g.draw(title="f(x, y) = y log x + sqrt(y log x)")
plt.savefig("docs/img/lecture_graph.png", dpi=120, bbox_inches="tight")
