"""The ``hegnn`` command: data, training, evaluation, benchmarks and serving.

Each sub-command lives beside the code it drives and is imported only when it runs,
so ``hegnn serve`` loads hegnn and service alone and ``hegnn --help`` is quick.
"""

import typer

from hegnn_cli.lazy import LazyCommand, LazyGroup

# In the order `hegnn --help` lists them (typer lists commands before groups).
COMMANDS: dict[str, LazyCommand] = {
    "train": LazyCommand(
        "training.commands:train",
        "Train a model; the checkpoint goes to checkpoint_dir/name.",
    ),
    "eval": LazyCommand(
        "training.commands:eval_",
        "Metrics of a checkpoint on a split of its protocol, as JSON.",
    ),
    "study": LazyCommand(
        "training.study:study",
        "Train models × seeds on one config and report test MSE with bootstrap CIs.",
    ),
    "report": LazyCommand(
        "training.report:report",
        "Write the shipped models' metrics table (Markdown + JSON) and their curves.",
    ),
    "md-check": LazyCommand(
        "training.md_check:md_check",
        "NVE MD through HEGNNCalculator: stability and drift (meV/atom/ps).",
    ),
    "expressivity": LazyCommand(
        "training.expressivity.cli:expressivity",
        "Which output degrees see a symmetric structure's orientation.",
    ),
    "serve": LazyCommand(
        "service.cli:serve",
        "Serve every checkpoint folder over HTTP (OpenAPI docs at /docs).",
    ),
    "data": LazyCommand("training.data.cli:data_app", "Make and import datasets."),
    "bench": LazyCommand(
        "benchmarks.cli:bench_app",
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
