"""Write the table of families x path handling x inference method (docs/capabilities.md).

Runs every cell of tests/capability_cases.py on its tiny recording (SMC end to end) and prints
the Markdown table: "works" with the cell's wall time, or "refused:" with the reason the code
gives.

    python tests/benchmarks/capability_table.py > /tmp/table.md
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import jax

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from capability_cases import METHODS, recording, rows, run

jax.config.update("jax_enable_x64", True)


def main() -> None:
    print("| family | path | " + " | ".join(METHODS) + " |")
    print("|---|---|" + "---|" * len(METHODS))
    for name, marginal, model, reason in rows():
        if model is None:
            cells = [f"refused: {reason}"] + ["" for _ in METHODS[1:]]
        else:
            ds, cells = recording(model), []
            for method in METHODS:
                start = time.perf_counter()
                outcome = run(model, method, ds)
                seconds = time.perf_counter() - start
                if outcome == "works":
                    cells.append(f"works ({seconds:.0f} s)")
                else:  # the refusal's first clause: the reason, without the advice after it
                    cells.append("refused: " + outcome.split(";")[0])
        print(f"| {name} | `{marginal}` | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
