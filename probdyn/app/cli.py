"""The ``probdyn`` command line.

Commands: ``demo``, ``fit CONFIG``, ``fixed-points RUN``, ``compare RUN...``, ``report RUN``,
``nlb --train --eval-input --out`` (co-smoothing).

Errors a user can cause (bad data, priors, configuration) end with one line on stderr and exit
status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys

from probdyn.errors import ProbdynError


def _demo(args) -> int:
    from probdyn.app.demo import TRUE_LATENT_DIM, run_demo

    table, report, points = run_demo(
        args.out,
        quick=args.quick,
        seed=args.seed,
        progress=not args.no_progress,
        workers=args.workers,
        recording=args.recording,
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
    probability = table["posterior_probability"].iloc[0]
    line = f"\nwinner: {winner} (posterior probability {probability:.3f})"
    if args.recording == "simulated":
        verdict = "matches" if winner == f"LDS(latent_dim={TRUE_LATENT_DIM})" else "differs from"
        line += f"; it {verdict} the generating model LDS(latent_dim={TRUE_LATENT_DIM})"
    print(line)
    if points is None:
        print(f"{winner}: discrete states, no fixed points")
    else:
        print(f"{winner}: {points.describe()}")
    print(f"report: {report}")
    return 0


def _open_run(path: str):
    """A run saved by probdyn (netCDF DataTree with a posterior that names its model)."""
    from pathlib import Path

    import xarray as xr

    from probdyn.errors import DataError

    run = Path(path)
    if not run.is_file():
        raise FileNotFoundError(f"no run file at {run}")
    try:
        tree = xr.open_datatree(run)
    except (OSError, ValueError) as error:
        raise DataError(f"{run} is not a netCDF run file ({error})") from None
    if "posterior" not in tree.children or "model" not in tree["posterior"].attrs:
        raise DataError(
            f"{run} has no posterior group with a 'model' attribute: not a run saved by probdyn"
        )
    return run, tree


def _output_path(run, out: str | None, suffix: str):
    """``out``, or RUN + suffix next to it; never the run itself."""
    from pathlib import Path

    from probdyn.errors import DataError

    path = Path(out) if out else run.with_name(run.stem + suffix)
    if path.resolve() == run.resolve():
        raise DataError(f"--out {path} is the run itself; choose another file (the run is kept)")
    return path


def _fixed_points(args) -> int:
    import json
    from pathlib import Path

    from probdyn.analysis.fixed_points import fixed_points
    from probdyn.models import from_spec

    out = _output_path(Path(args.run), args.out, "-fixed-points.nc")
    _, tree = _open_run(args.run)
    model = from_spec(json.loads(tree["posterior"].attrs["model"]))
    points = fixed_points(
        model,
        tree,
        seed=args.seed,
        num_draws=args.num_draws,
        num_starts=args.num_starts,
        progress=not args.no_progress,
    )
    if "fixed_points" in tree.children:
        tree = tree.copy()
        del tree["fixed_points"]
    points.attach(tree.load()).to_netcdf(out)
    print(points.describe())
    print(f"written: {out}")
    return 0


#: Steps of ``probdyn fit`` after the fit, each saved into the run as it finishes.
FIT_STEPS = ("evidence", "predictive", "report")


def _fit(args) -> int:
    """Fit, save the run, then add evidence, predictive and report, each saved as it finishes.

    A rerun with the same configuration (the memory limit may change) resumes: the fit is read
    back from ``run.nc`` (or resumed from the SVI checkpoint if the run was not yet written) and
    only the steps missing from the run are done. A step that fails says so in one line and
    leaves what finished in place.
    """
    import json
    import platform
    from importlib.metadata import version
    from pathlib import Path

    from probdyn.runtime import distributed

    # Before anything touches a device (importing blackjax does): several processes join here.
    joined = distributed.initialize(args.coordinator, args.num_processes, args.process_id)

    import jax
    import xarray as xr

    from probdyn.app.config import build_model, load_config, load_data, same_run
    from probdyn.errors import ConfigError
    from probdyn.inference import MCMCResult, log_evidence, nuts, svi
    from probdyn.inference.arviz import PREDICTIVE_GROUPS, add_predictive
    from probdyn.inference.density import bind
    from probdyn.inference.guides import MVN_MAX_DIM
    from probdyn.runtime import devices, memory

    config = load_config(args.config)
    out = Path(args.out or config["out"])
    run_path, saved_config = out / "run.nc", out / "config.toml"
    if saved_config.exists() and not same_run(load_config(saved_config), config):
        raise ConfigError(
            f"{out} holds a run of another configuration ({saved_config}); runs are never "
            "overwritten: choose another out"
        )
    writes = devices.is_main_process()  # every process computes, process 0 writes
    model = build_model(config)
    data = model.prepare(load_data(config))
    settings, seed = config["inference"], config["seed"]
    limit = args.memory_limit or config.get("memory_limit")
    progress = writes and not args.no_progress
    if writes:
        out.mkdir(parents=True, exist_ok=True)
        if not saved_config.exists():
            saved_config.write_text(Path(args.config).read_text())
    log = []

    def say(line: str) -> None:
        if writes:
            print(line, flush=True)
        log.append(line)

    if joined:
        say(
            f"process {jax.process_index()} of {jax.process_count()}: "
            f"{jax.device_count()} devices in all"
        )

    hyperparameters = ", ".join(f"{k}={v!r}" for k, v in config["model"]["hyperparameters"].items())
    name = f"{config['model']['family']}({hyperparameters})"
    failures = []
    with memory.limit(limit, progress=progress) as budget:
        say(
            f"fitting {name} to {data.num_trials} trials x {data.num_timesteps} bins x "
            f"{data.emission_dim} channels (memory limit "
            f"{memory.format_size(budget.resolved_limit())})"
        )
        resumed = run_path.exists()
        # On resume the fit's result is rebuilt only where the evidence still needs it.
        needs_result = not resumed
        if resumed:
            tree = xr.load_datatree(run_path)
            missing = _missing_steps(tree, out)
            say(f"resuming: {run_path} holds the fit; missing: {missing}")
            needs_result = "evidence" in missing

        def fit_svi():
            return svi(
                model,
                data,
                num_steps=settings.get("num_steps", 2000),
                seed=seed,
                guide=settings.get("guide", "auto"),
                learning_rate=settings.get("learning_rate", 1e-2),
                batch_size=settings.get("batch_size"),
                coordinated_dropout=settings.get("coordinated_dropout", 0.0),
                encoder_dropout=settings.get("encoder_dropout", 0.0),
                warmup=settings.get("warmup", 0),
                checkpoint=out / "svi.ckpt",  # a killed run resumes from here
                num_devices=settings.get("num_devices"),
                progress=progress,
            )

        result = None
        if settings["method"] == "svi" and not resumed:
            result = fit_svi()
            say(f"svi: final loss {result.losses[-1]:.4g} after {len(result.losses)} steps")
            tree = result.to_arviz(
                num_samples=settings.get("num_draws", 500), seed=seed, predictive=False
            )
        elif settings["method"] == "svi" and needs_result and settings["evidence"] == "iwae":
            result = fit_svi()  # read back from its finished checkpoint
        elif settings["method"] == "nuts" and not resumed:
            # Warm start (docs/geometry.md): an SVI guide gives the chains their starts and
            # their mass matrix, so the warm-up only tunes the step size. Not by default where
            # the chains also sample per-trial latents (paths): there the guide's covariance
            # was a worse mass matrix than the adapted diagonal (SDERNN: 1000 leapfrog steps
            # per draw against 250), and the warm start gained nothing.
            paths = sorted(
                name
                for name in bind(model, data).shapes
                if model.site_dims.get(name, [""])[0] == "trial"
            )
            warm_steps = settings.get("warm_start", 0 if paths else 2000)
            if paths and "warm_start" not in settings:
                say(f"nuts: cold start (the chains sample the per-trial sites {', '.join(paths)})")
            init = None
            if warm_steps:
                init = svi(model, data, num_steps=warm_steps, seed=seed, progress=progress)
                say(f"nuts warm start: svi loss {init.losses[-1]:.4g} after {warm_steps} steps")
            result = nuts(
                model,
                data,
                init=init,
                dense_mass=init is not None and init.density.dim <= MVN_MAX_DIM,
                num_warmup=settings.get("num_warmup", 200 if init else 500),
                num_samples=settings.get("num_samples", 500),
                num_chains=settings.get("num_chains", 4),
                chain_method=settings["chain_method"],
                seed=seed,
                progress=progress,
            )
            say(f"nuts: {result.diagnostics()}")
            tree = result.to_arviz(predictive=False)
        elif settings["method"] == "nuts" and needs_result and settings["evidence"] == "bridge":
            result = MCMCResult.from_datatree(model, data, tree, seed=seed)
        if not resumed:
            tree.attrs["name"] = name
            if writes:
                _save_run(tree, run_path)
                say(
                    f"run: {run_path} (the fit; evidence, predictive and report follow; peak "
                    f"memory so far {memory.format_size(memory.peak_bytes())})"
                )

        def evidence_step():
            # iwae weighs the SVI guide's draws and bridge bridges from the NUTS draws of this fit.
            reused = {("iwae", "svi"): "svi_result", ("bridge", "nuts"): "mcmc_result"}
            option = reused.get((settings["evidence"], settings["method"]))
            options = dict(settings["evidence_options"])
            if option:
                options[option] = result
            if settings["evidence"] == "smc":
                options["num_devices"] = settings.get("num_devices")
            evidence = log_evidence(model, data, method=settings["evidence"], seed=seed, **options)
            say(str(evidence))
            return {"evidence": evidence.to_dataset()}

        def predictive_step():
            density = result.density if result is not None else bind(model, data)
            with_predictive = add_predictive(tree.copy(), model, density, seed=seed + 1)
            return {name: with_predictive[name].to_dataset() for name in PREDICTIVE_GROUPS}

        steps = {"evidence": evidence_step, "predictive": predictive_step}
        changed = not resumed
        for step in FIT_STEPS:
            missing = step in _missing_steps(tree, out)
            if step == "evidence" and settings["evidence"] == "none":
                continue
            if not missing and not (step == "report" and changed):
                continue  # done before; the report is redone when anything above it changed
            try:
                if step == "report":
                    if writes:
                        from probdyn.app.report import run_sections, write_report

                        path = write_report(
                            out / "report.html", f"probdyn run: {name}", run_sections(tree, name)
                        )
                        say(f"report: {path}")
                    continue
                groups = steps[step]()
            except (ProbdynError, FloatingPointError, MemoryError, RuntimeError) as error:
                failures.append(step)
                first = str(error).strip().splitlines()[0] if str(error).strip() else ""
                line = (
                    f"probdyn: {step} failed ({type(error).__name__}: {first}); {run_path} keeps "
                    "what finished; rerun the same command to retry"
                )
                print(line, file=sys.stderr, flush=True)
                log.append(line)
                continue
            for group, dataset in groups.items():
                tree[group] = xr.DataTree(dataset)
            changed = True
            if writes:
                _save_run(tree, run_path)
            say(f"{step}: saved (peak memory so far {memory.format_size(memory.peak_bytes())})")
    if not writes:
        return 0
    packages = ("probdyn", "jax", "numpyro", "arviz", "xarray", "optax", "blackjax")
    versions = {"python": platform.python_version(), **{p: version(p) for p in packages}}
    (out / "versions.json").write_text(json.dumps(versions, indent=2))
    say(f"run: {run_path}")
    with open(out / "fit.log", "a") as handle:
        handle.write("\n".join(log) + "\n")
    return 1 if failures else 0


def _missing_steps(tree, out) -> list[str]:
    """The steps of :data:`FIT_STEPS` a saved run lacks (the report is a file beside it)."""
    present = {
        "evidence": "evidence" in tree.children,
        "predictive": "posterior_predictive" in tree.children,
        "report": (out / "report.html").exists(),
    }
    return [step for step in FIT_STEPS if not present[step]]


def _save_run(tree, path) -> None:
    """Write the run file whole, then move it into place (a killed write leaves the old one)."""
    import os

    partial = path.with_name(path.name + ".partial")
    tree.to_netcdf(partial)
    os.replace(partial, path)


def _count(minimum: int):
    """An argparse type: an integer of at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    return parse


def _nlb(args) -> int:
    import json
    from pathlib import Path

    from probdyn.analysis.metrics import co_bps
    from probdyn.app import nlb
    from probdyn.data import load_nlb
    from probdyn.errors import ConfigError, DataError

    if args.eval_input is None and args.folds is None:
        raise ConfigError("give --eval-input (predict its trials), --folds K, or both")
    if args.eval_input is not None and args.out is None:
        raise ConfigError("--eval-input needs --out (the submission file to write)")
    chosen = {
        "bin_factor": args.bin_factor,
        "generator": args.generator,
        "factors": args.factors,
        "inputs": args.inputs,
        "num_steps": args.steps,
        "members": args.members,
    }
    settings = nlb.Settings(**{k: v for k, v in chosen.items() if v is not None})
    grid = nlb.settings_grid(settings, args.search) if args.search else []
    train = load_nlb(args.train, split="train")
    num_heldout = int(train.heldout.sum())
    evaluate = None
    if args.eval_input is not None:
        evaluate = nlb.load_eval_input(args.eval_input, num_heldout)
        if (
            evaluate.sizes["neuron"] != train.sizes["neuron"]
            or evaluate.sizes["time"] != train.sizes["time"]
        ):
            raise DataError(
                f"{args.eval_input} has {evaluate.sizes['neuron'] - num_heldout} held-in neurons "
                f"and {evaluate.sizes['time']} bins; the training file has "
                f"{train.sizes['neuron'] - num_heldout} and {train.sizes['time']}"
            )
    work = Path(args.work) if args.work else Path(args.out or args.train).with_suffix(".work")
    progress = not args.no_progress
    if args.folds is not None:
        validation = nlb.cross_validate(
            train,
            args.folds,
            settings,
            seed=args.seed,
            work=work / "folds",
            progress=progress,
            search=grid,
        )
        rows, mean = validation.rows, validation.mean()
        for row in rows:
            print(f"fold {row['fold'] + 1}: {nlb.format_row(row)}")
        print(f"mean: {nlb.format_row(mean)}")
        print(f"single members: {validation.member_spread()}")
        if args.table:
            Path(args.table).write_text(json.dumps({"folds": rows, "mean": mean}, indent=1))
            print(f"table: {args.table}")
        if args.report:
            from probdyn.app.report import nlb_sections, write_report

            title = f"probdyn nlb: {args.folds}-fold cross-validation of {Path(args.train).name}"
            path = write_report(args.report, title, nlb_sections(validation, seed=args.seed))
            print(f"report: {path}")
    if evaluate is None:
        return 0
    heldout = train.heldout.values
    T = train.sizes["time"]
    if grid:
        settings, table = nlb.search_settings(
            train, grid, seed=args.seed, work=work / "search", progress=progress
        )
        for row in table:
            print(f"search: {row['settings']}: co-bps {row['co_bps']:.3f} (3 folds, one member)")
        print(f"chosen: {nlb.describe(settings)}")
    ensemble = nlb.fit_ensemble(
        train,
        {"train": nlb.heldin_only(train), "eval": evaluate},
        settings,
        seed=args.seed,
        work=work / "submission",
        progress=progress,
    )
    fitted, predicted = ensemble.predictions["train"], ensemble.predictions["eval"]
    rates = {
        "train_rates_heldin": fitted.mean[:, :T, ~heldout],
        "train_rates_heldout": fitted.mean[:, :T, heldout],
        "eval_rates_heldin": predicted.mean[:, :T, ~heldout],
        "eval_rates_heldout": predicted.mean[:, :T, heldout],
    }
    if predicted.mean.shape[1] > T:
        rates["eval_rates_heldin_forward"] = predicted.mean[:, T:, ~heldout]
        rates["eval_rates_heldout_forward"] = predicted.mean[:, T:, heldout]
    path = nlb.write_submission(args.out, args.dataset or nlb.dataset_name(args.train), rates)
    band = path.with_suffix(".band.nc")
    predicted.to_dataset(heldout, float(train.attrs["dt"])).to_netcdf(band)
    fitted_co = co_bps(train.spikes.values[..., heldout], rates["train_rates_heldout"])
    print(f"co-bps on the training trials (in sample): {fitted_co:.3f}")
    print(f"predicted rates: {path}")
    print(f"posterior band of the evaluation rates (5%-95%): {band}")
    return 0


def _run_name(run, tree) -> str:
    return str(tree.attrs.get("name", run.stem))


def _report(args) -> int:
    from pathlib import Path

    from probdyn.app.report import run_sections, write_report

    out = _output_path(Path(args.run), args.out, "-report.html")
    run, tree = _open_run(args.run)
    name = _run_name(run, tree)
    path = write_report(out, f"probdyn run: {name}", run_sections(tree, name))
    print(f"report: {path}")
    return 0


def _compare(args) -> int:
    import html
    from pathlib import Path

    from probdyn.app.report import evidence_figure, figure_html, write_report
    from probdyn.errors import DataError
    from probdyn.inference import Evidence, comparison_table

    evidences, trees = {}, {}
    for path in args.runs:
        run, tree = _open_run(path)
        name = _run_name(run, tree)
        if name in evidences:
            raise DataError(f"two runs are named {name!r} ({run}); compare distinct models")
        if "evidence" not in tree.children:
            raise DataError(
                f"{run} has no evidence group; estimate one with "
                "probdyn.inference.log_evidence and save it with Evidence.to_dataset"
            )
        evidences[name] = Evidence.from_dataset(tree["evidence"].to_dataset())
        if "log_likelihood" in tree.children:
            trees[name] = tree.load()
    table = comparison_table(evidences, trees=trees)
    columns = ["model", "method", "log_evidence", "standard_error", "delta", "delta_se"]
    columns += ["posterior_probability", "elpd_loo", "elpd_loo_se"]
    shown = table[[c for c in columns if c in table]]
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    notes = sorted(set(table["note"]) - {""})
    for note in notes:
        print(f"note: {note}")
    if args.out:
        table.drop(columns=["note"]).to_csv(args.out, index=False)
        print(f"table: {args.out}")
    if args.report:
        body = (
            shown.to_html(index=False, float_format="%.3f", classes="evidence")
            + "".join(f"<p>{html.escape(note)}</p>" for note in notes)
            + figure_html(evidence_figure(table), "log evidence relative to the best model")
        )
        path = write_report(Path(args.report), "probdyn comparison", [("Evidence", body)])
        print(f"report: {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with its subcommands."""
    from importlib.metadata import version

    parser = argparse.ArgumentParser(prog="probdyn", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"probdyn {version('probdyn')}")
    debug_help = "show the full traceback of an error instead of one line"
    parser.add_argument("--debug", action="store_true", help=debug_help)
    # Also after the command (probdyn fit CONFIG --debug); SUPPRESS keeps a top-level one.
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug_help)
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, **options) -> argparse.ArgumentParser:
        return commands.add_parser(name, parents=[debug], **options)

    demo = command(
        "demo", help="simulate (or read the shipped recording), fit candidates, compare, report"
    )
    demo.add_argument("--out", default="probdyn-demo", help="output directory")
    demo.add_argument(
        "--quick",
        action="store_true",
        help="one candidate per family, smaller data, fewer steps (under a minute)",
    )
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument(
        "--recording",
        choices=["simulated", "mc_maze_small"],
        default="simulated",
        help="simulated (known generating model) or the shipped MC_Maze_Small spike counts",
    )
    demo.add_argument(
        "--workers",
        type=_count(1),
        help="processes fitting the candidates (default: cores + 1; 1: in this process)",
    )
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    demo.set_defaults(handler=_demo)
    points = command(
        "fixed-points", help="posterior over the fixed points of a saved run (netCDF DataTree)"
    )
    points.add_argument("run", help="a run saved by probdyn, e.g. probdyn-demo/winner.nc")
    points.add_argument(
        "--out", help="output file (default: RUN-fixed-points.nc next to it; RUN is never changed)"
    )
    points.add_argument("--num-draws", type=_count(1), default=200, help="posterior draws searched")
    points.add_argument("--num-starts", type=_count(1), default=32, help="starts per draw")
    points.add_argument("--seed", type=int, default=0)
    points.add_argument("--no-progress", action="store_true", help="no progress bar")
    points.set_defaults(handler=_fixed_points)
    fit = command("fit", help="fit a model to data as a TOML config says")
    fit.add_argument("config", help="a run configuration (see probdyn.app.config)")
    fit.add_argument("--out", help="output directory (default: the config's out)")
    fit.add_argument("--no-progress", action="store_true", help="no progress bars")
    fit.add_argument(
        "--memory-limit",
        help="memory the run may use, e.g. 4GB (default: the config's memory_limit, else 3/4 of "
        "the memory available at the start)",
    )
    fit.add_argument(
        "--coordinator",
        help="host:port of process 0, to run as one of several processes "
        "(default: $PROBDYN_COORDINATOR; none: one process)",
    )
    fit.add_argument(
        "--num-processes", type=_count(1), help="processes in all (or $PROBDYN_NUM_PROCESSES)"
    )
    fit.add_argument(
        "--process-id", type=_count(0), help="this process, 0..N-1 (or $PROBDYN_PROCESS_ID)"
    )
    fit.set_defaults(handler=_fit)
    compare = command(
        "compare", help="compare saved runs by their evidence (and PSIS-LOO where available)"
    )
    compare.add_argument(
        "runs", nargs="+", help="runs saved by probdyn, e.g. probdyn-demo/runs/*.nc"
    )
    compare.add_argument("--out", help="write the table as CSV")
    compare.add_argument("--report", help="write an HTML report of the comparison")
    compare.set_defaults(handler=_compare)
    report = command("report", help="HTML report of one saved run")
    report.add_argument("run", help="a run saved by probdyn")
    report.add_argument("--out", help="output file (default: RUN-report.html next to it)")
    report.set_defaults(handler=_report)
    cosmoothing = command(
        "nlb",
        help="Neural Latents Benchmark: fit a SeqVAE ensemble, write the submission rates, "
        "cross-validate against the smoothing baseline",
    )
    cosmoothing.add_argument("--train", required=True, help="e.g. mc_maze_small_train.h5")
    cosmoothing.add_argument(
        "--eval-input", help="h5 file with eval_spikes_heldin (trials to predict)"
    )
    cosmoothing.add_argument("--out", help="h5 file of predicted rates to write")
    cosmoothing.add_argument(
        "--folds",
        type=_count(2),
        help="K-fold cross-validation over the training trials: co-bps, fp-bps, velocity R2 "
        "beside the smoothing baseline's",
    )
    cosmoothing.add_argument("--table", help="JSON file for the cross-validation table")
    cosmoothing.add_argument(
        "--report",
        help="HTML report of the cross-validation: scores, rates with their band against the "
        "held-out spikes, the generator's fixed points",
    )
    cosmoothing.add_argument(
        "--dataset", help="h5 group name (default: the training file's name without _train)"
    )
    for flag, minimum, text in (
        ("--members", 1, "ensemble members (seeds); default 3"),
        ("--steps", 1, "optimisation steps per member; default 700"),
        ("--bin-factor", 1, "file bins summed into one model bin; default 2"),
        ("--generator", 1, "GRU units of the generator; default 64"),
        ("--factors", 1, "factors between generator and rates; default 40"),
        ("--inputs", 0, "inferred inputs per bin; default 0 (none)"),
    ):
        cosmoothing.add_argument(flag, type=_count(minimum), help=text)
    cosmoothing.add_argument(
        "--search",
        action="append",
        metavar="NAME=V1,V2",
        help="choose among settings (e.g. generator=64,128; repeat for a grid) by 3-fold co-bps "
        "on the training trials (with --folds: inside each fold)",
    )
    cosmoothing.add_argument("--seed", type=int, default=0)
    cosmoothing.add_argument(
        "--work", help="folder of the members' checkpoints (default: OUT.work); a rerun resumes"
    )
    cosmoothing.add_argument("--no-progress", action="store_true", help="no progress bars")
    cosmoothing.set_defaults(handler=_nlb)
    return parser


class _PrintHandler(logging.Handler):
    """Prints each record on the standard output of the moment (as the CLI's own lines are)."""

    def emit(self, record: logging.LogRecord) -> None:
        print(self.format(record), flush=True)


def _show_cost_lines() -> None:
    """Print probdyn's INFO lines (what each chunked step will cost) with the CLI's output."""
    logger = logging.getLogger("probdyn")
    if not any(isinstance(h, _PrintHandler) for h in logger.handlers):
        logger.addHandler(_PrintHandler())
        logger.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``probdyn`` command."""
    args = build_parser().parse_args(argv)
    from probdyn.runtime.compilation import use_persistent_cache

    use_persistent_cache()
    _show_cost_lines()
    try:
        return args.handler(args)
    except Exception as error:
        if args.debug:
            raise
        if isinstance(error, ProbdynError | FileNotFoundError | FloatingPointError):
            print(f"probdyn: error: {error}", file=sys.stderr)
            return 2
        # A bug, or a failure below probdyn: one line, no traceback.
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        print(
            f"probdyn: unexpected {type(error).__name__}: {first} (rerun with --debug for the "
            "traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
