"""Flow a point cloud onto a ring by gradient descent on the Sinkhorn cost; saves a PNG.

python examples/sinkhorn_flow.py [output_dir]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adjoint.problems import point_cloud_flow  # noqa: E402

if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else "."
    res = point_cloud_flow.solve(out)
    values = res.summary["values"]
    print(f"J: {values[0]:.5f} -> {values[-1]:.5f}; figure: {res.figure}")
