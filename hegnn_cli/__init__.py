"""The ``hegnn`` command: data, training, evaluation, benchmarks and serving.

Each sub-command lives beside the code it drives and is imported only when it runs,
so ``hegnn serve`` loads hegnn and service alone and ``hegnn --help`` is quick.
"""

try:
    import typer
except ModuleNotFoundError as missing:  # the base install: HEGNNClient and friends only
    raise SystemExit(
        f"hegnn: {missing.name} is not installed; this install has the client only. "
        "Install an extra for the command: pip install 'hegnn-serve[serve]' to serve, "
        "'hegnn-serve[train]' to train."
    ) from None

from hegnn_cli.lazy import LazyCommand, LazyGroup

# In the order `hegnn --help` lists them (typer lists commands before groups).
COMMANDS: dict[str, LazyCommand] = {
    "train": LazyCommand(
        "hegnn_serve.training.commands:train",
        "Train a model; the checkpoint goes to checkpoint_dir/name.",
    ),
    "eval": LazyCommand(
        "hegnn_serve.training.commands:eval_",
        "Metrics of a checkpoint on a split of its protocol, as JSON.",
    ),
    "study": LazyCommand(
        "hegnn_serve.training.study:study",
        "Train models × seeds on one config and report test MSE with bootstrap CIs.",
    ),
    "ablate": LazyCommand(
        "hegnn_serve.training.ablation:ablate",
        "Train a config and variants of it side by side per seed; compare on val.",
    ),
    "report": LazyCommand(
        "hegnn_serve.training.report:report",
        "Write the shipped models' metrics table (Markdown + JSON) and their curves.",
    ),
    "committee": LazyCommand(
        "hegnn_serve.training.committee:committee",
        "Put seed members into one committee checkpoint and calibrate its spread.",
    ),
    "compare": LazyCommand(
        "hegnn_serve.training.compare:compare",
        "Paired seeds × frames: force and energy errors of two committees, A − B with "
        "95 % bootstrap intervals.",
    ),
    "md-check": LazyCommand(
        "hegnn_serve.training.md_check:md_check",
        "Relax, thermalise, then NVE MD through HEGNNCalculator: stability and drift "
        "(meV/atom/ps).",
    ),
    "expressivity": LazyCommand(
        "hegnn_serve.training.expressivity.cli:expressivity",
        "Which output degrees see a symmetric structure's orientation.",
    ),
    "serve": LazyCommand(
        "hegnn_serve.service.cli:serve",
        "Serve every checkpoint folder over HTTP (OpenAPI docs at /docs).",
    ),
    "ipi": LazyCommand(
        "hegnn_serve.service.ipi:ipi",
        "Drive an i-PI server (i-PI, ASE's SocketIOCalculator) with a potential model.",
    ),
    "data": LazyCommand(
        "hegnn_serve.training.data.cli:data_app", "Make and import datasets."
    ),
    "bench": LazyCommand(
        "hegnn_serve.benchmarks.cli:bench_app",
        "Benchmarks (DESIGN.md §10): JSON and PNG results under --out.",
    ),
}


class HegnnGroup(LazyGroup):
    lazy_commands = COMMANDS


app = typer.Typer(
    cls=HegnnGroup,
    no_args_is_help=True,
    help="HEGNN: data, training, evaluation, serving",
)


@app.callback()
def _main() -> None:
    # typer builds a group (not a single command) only for an app with a callback.
    pass
