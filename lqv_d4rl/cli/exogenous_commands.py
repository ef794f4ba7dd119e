"""``lqv-d4rl add-exogenous ID``: a variant of a dataset whose states carry exogenous dimensions
(chaotic Lorenz-63 systems that no action affects), in the dataset and in evaluation alike.

The work is done by :mod:`lqv_d4rl.exogenous_dataset`, imported only when the verb runs.
"""

import click

from .options import ROOT_DEFAULT


@click.command("add-exogenous")
@click.argument("dataset_id")
@click.option("--id", "new_id", required=True,
              help="Id of the new dataset, e.g. walker_walk-medrep-exo24.")
@click.option("--dims", type=click.IntRange(min=3), default=None,
              show_default="the smallest multiple of 3 >= the state size (24 for walker_walk)",
              help="Exogenous dimensions to append: a multiple of 3 (one Lorenz-63 system per 3).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Keys the exogenous initial conditions, with each episode's own seed.")
@click.option("--root", type=click.Path(file_okay=False), default=None,
              help=f"Dataset root of the source ({ROOT_DEFAULT}).")
@click.option("--to-root", type=click.Path(file_okay=False), default=None,
              show_default="the source's root", help="Dataset root of the new dataset.")
@click.option("--overwrite", is_flag=True, help="Replace a finished dataset of that id.")
def add_exogenous(dataset_id, new_id, dims, seed, root, to_root, overwrite):
    """Write DATASET_ID with exogenous state dimensions appended, as a new dataset.

    The new dataset has the same images, actions, rewards, flags and physics; its `state` gets
    DIMS more entries from DIMS/3 independent Lorenz-63 systems (sigma 10, rho 28, beta 8/3,
    normalized to about unit scale) whose initial conditions come from each episode's seed. A
    run trained on it with observation=state is evaluated with the same process appended to the
    environment's state, seeded from each evaluation episode's seed. Rerunning an interrupted
    command resumes it.
    """
    from ..exogenous_dataset import add_exogenous as run_add_exogenous

    folder = run_add_exogenous(dataset_id, new_id, dims=dims, seed=seed, root=root,
                               to_root=to_root, overwrite=overwrite)
    click.echo(f"{new_id}: {folder}")


COMMANDS = [add_exogenous]
