"""The `hegnn` command line (typer). Sub-commands live beside the code they drive."""

import typer

from training.commands import eval_, train
from training.data.cli import data_app

app = typer.Typer(
    no_args_is_help=True, help="HEGNN: data, training, evaluation, serving"
)
app.add_typer(data_app, name="data")
app.command("train")(train)
app.command("eval")(eval_)
