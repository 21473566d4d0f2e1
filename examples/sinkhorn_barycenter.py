"""Sinkhorn barycenters interpolating a circle and a square (free support); saves a PNG.

python examples/sinkhorn_barycenter.py [output_dir]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adjoint.problems import barycenter  # noqa: E402

if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else "."
    res = barycenter.solve(out)
    print(f"figure: {res.figure}")
