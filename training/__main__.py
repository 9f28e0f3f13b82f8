"""`python -m hegnn_serve.training ...`: an alias of `python -m hegnn_cli`, the
`hegnn` command where no console script exists."""

from hegnn_cli import app

app(prog_name="hegnn")
