"""The ``probdyn`` command line: ``probdyn demo``.

Errors a user can cause (bad data, priors, configuration) end with one line on stderr and exit
status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys

from probdyn.errors import ProbdynError


def _demo(args) -> int:
    from probdyn.demo import TRUE_LATENT_DIM, run_demo

    table, report, points = run_demo(
        args.out, quick=args.quick, seed=args.seed, progress=not args.no_progress
    )
    columns = [
        "model",
        "method",
        "log_evidence",
        "standard_error",
        "delta",
        "posterior_probability",
    ]
    print(table[columns].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    winner = table["model"].iloc[0]
    verdict = "matches" if winner == f"LDS(latent_dim={TRUE_LATENT_DIM})" else "differs from"
    print(
        f"\nwinner: {winner} (posterior probability {table['posterior_probability'].iloc[0]:.3f}); "
        f"it {verdict} the generating model LDS(latent_dim={TRUE_LATENT_DIM})"
    )
    print(f"{winner}: {points.describe()}")
    print(f"report: {report}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with its subcommands."""
    parser = argparse.ArgumentParser(prog="probdyn", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="simulate, fit candidate models, compare, report")
    demo.add_argument("--out", default="probdyn-demo", help="output directory")
    demo.add_argument(
        "--quick", action="store_true", help="smaller data, IWAE bound (under a minute)"
    )
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``probdyn`` command."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ProbdynError, FileNotFoundError, FloatingPointError) as error:
        print(f"probdyn: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
