"""Train the lecture's reversible ResNet on two moons with O(1)-memory gradients; plot the boundary.

    PYTHONPATH=. python examples/revnet_moons.py [--layers 20] [--hidden 4] [--out .]

The network ``x_{k+1} = x_k + tau tanh(W1 y_k + b1)``, ``y_{k+1} = y_k + tau tanh(W2 x_{k+1} + b2)``
is ``adjoint.Leapfrog`` on a separable field (``problems/revnet.py``); ``checkpoint=Reversible()``
rebuilds each layer's input from its output in the backward sweep, so memory does not grow with the
number of layers. scipy's L-BFGS-B does the training.
"""

import argparse

from adjoint.problems import revnet


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=20)
    ap.add_argument("--hidden", type=int, default=4)
    ap.add_argument("--max-iter", type=int, default=300)
    ap.add_argument("--out", default=".")
    a = ap.parse_args()
    res = revnet.solve(a.out, steps=a.layers, hidden=a.hidden, max_iter=a.max_iter)
    s = res.summary
    print(
        f"training accuracy {s['accuracy']:.1%}, loss {s['objective']:.4f} after {s['iterations']} L-BFGS "
        f"iterations; saved {res.figure}"
    )


if __name__ == "__main__":
    main()
