"""The `hegnn` command line (typer). Sub-commands live beside the code they drive."""

import typer

from service.cli import serve
from training.bench import bench_app
from training.commands import eval_, train
from training.data.cli import data_app
from training.expressivity.cli import expressivity
from training.md_check import md_check
from training.report import report

app = typer.Typer(
    no_args_is_help=True, help="HEGNN: data, training, evaluation, serving"
)
app.add_typer(data_app, name="data")
app.add_typer(bench_app, name="bench")
app.command("train")(train)
app.command("eval")(eval_)
app.command("report")(report)
app.command("md-check")(md_check)
app.command("expressivity")(expressivity)
app.command("serve")(serve)
