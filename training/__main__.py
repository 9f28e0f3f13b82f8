"""`python -m training ...` is the `hegnn` command where no console script exists."""

from training.cli import app

app(prog_name="hegnn")
