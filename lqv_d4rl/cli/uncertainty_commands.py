"""``lqv-d4rl uncertainty RUN_DIR...``: the paper's Fig. 7/8 comparison of the model-based methods'
ensemble uncertainty (Offline DV2, LOMPO, SeMOPO endogenous and exogenous) from trained runs.

The work is done by :mod:`baselines.uncertainty`, imported only when the verb runs.
"""

from pathlib import Path

import click

from ..errors import DatasetNotFoundError
from .hints import not_found_error
from .options import check_device_name, root_option


@click.command("uncertainty")
@click.argument("run_dirs", nargs=-1, required=True,
                type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for state_uncertainty.csv, _summary.csv/.md and .png.")
@click.option("--states", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Random dataset states to score (the paper: 1,000).")
@click.option("--context", type=click.IntRange(min=1), default=16, show_default=True,
              help="Window length: entries filtered up to and including each scored state.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seeds the choice of states and the posterior samples.")
@root_option
@click.option("--device", default="cpu", show_default=True, callback=check_device_name,
              help="Torch device.")
def uncertainty(run_dirs, out, states, context, seed, root, device):
    """Score the ensembles of trained offline_dv2, lompo and semopo runs (of one dataset) at the
    same random dataset states: mean disagreement (md) and log-likelihood spread (vlp) per method and
    branch, as a table and a box-plot figure in --out."""
    from baselines.uncertainty import compare_uncertainty

    from ..dataset import load_dataset
    from ..runs import read_run_config, run_dataset_source

    record = read_run_config(run_dirs[0])
    source = run_dataset_source(record)
    try:
        data = load_dataset(source, root=root)
    except DatasetNotFoundError as err:
        raise not_found_error(err, [source]) from None
    written = compare_uncertainty(list(run_dirs), data, out, states=states, context=context,
                                  seed=seed, device=device)
    for name, path in written.items():
        click.echo(f"{name}: {path}")
    click.echo(Path(written["uncertainty_summary_md"]).read_text(), nl=False)


COMMANDS = [uncertainty]
