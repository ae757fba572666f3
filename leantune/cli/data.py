"""``leantune data ...``: inspect datasets."""
from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from .app import DATA_HELP, SEED_HELP, SEED_MAX, app

data_app = typer.Typer(help="Inspect recommendation datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("stats")
def stats(
    data: str = typer.Option("games", "--data", help=DATA_HELP),
    seed: int = typer.Option(0, "--seed", min=0, max=SEED_MAX, help=SEED_HELP + " The counts themselves draw nothing at random."),
) -> None:
    """Print users, items, samples (and users with validation/test items only), history-length
    percentiles and users with targets."""
    from ..data import load_dataset
    from ..data.stats import dataset_stats

    st = dataset_stats(load_dataset(data))
    table = Table(title=f"dataset {st.name}", show_header=False)
    for key, value in st.rows():
        table.add_row(key, value)
    Console().print(table)
