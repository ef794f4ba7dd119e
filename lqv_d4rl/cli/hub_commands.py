"""CLI verbs that talk to the Hugging Face Hub: ``download`` and ``upload``.

The repository defaults to ``$LQV_D4RL_HUB_REPO``, else ``lqv-d4rl/lqv-d4rl`` (``upload`` needs it
named explicitly). The endpoint comes from ``$LQV_D4RL_HUB_ENDPOINT`` or ``$HF_ENDPOINT``;
``HF_HUB_OFFLINE=1`` downloads from the local cache only.
"""

import click

from .hints import cli_error
from .options import check_repo_id, root_option


@click.command("download")
@click.argument("dataset_ids", metavar="ID...", nargs=-1, required=True)
@click.option("--repo-id", default=None, callback=check_repo_id,
              help="Hub dataset repo (default: $LQV_D4RL_HUB_REPO or lqv-d4rl/lqv-d4rl).")
@click.option("--revision", default=None,
              help="Branch, tag or commit sha to download; pin a tag or commit for reproducible results.")
@root_option
@click.option("--force", is_flag=True, help="Replace a local dataset that differs from the Hub's.")
def download(dataset_ids, repo_id, revision, root, force):
    """Download datasets from the Hugging Face Hub, checking every shard's sha256."""
    from ..errors import LQVError
    from ..hub import download_dataset, hub_settings, read_hub_record, unreachable_reason

    for dataset_id in dataset_ids:
        try:
            folder = download_dataset(dataset_id, repo_id=repo_id, revision=revision, root=root, force=force)
        except LQVError as err:
            raise cli_error(err, [dataset_id]) from None
        except ValueError as err:
            raise click.ClickException(str(err)) from None
        record = read_hub_record(folder)
        if record is None:  # a dataset made on this machine was kept
            settings = hub_settings(repo_id)
            compared = not settings.offline and not unreachable_reason(settings)
            origin = (f"identical to {settings.repo_id}@{revision or 'main'} (local copy kept)"
                      if compared else "local copy kept (offline: not compared with the Hub)")
        else:
            origin = f"{record['repo_id']}@{record['revision']} (commit {record['commit'][:12]})"
        click.echo(f"{dataset_id}: {origin} -> {folder}")


@click.command("upload")
@click.argument("datasets", metavar="ID_OR_FOLDER...", nargs=-1, required=True)
@click.option("--repo-id", required=True, envvar="LQV_D4RL_HUB_REPO", callback=check_repo_id,
              help="Hub dataset repo to publish to, e.g. my-org/lqv-d4rl (or $LQV_D4RL_HUB_REPO).")
@root_option
@click.option("--revision", default=None, help="Branch to commit to (default: main).")
@click.option("--private", is_flag=True, help="Create the repo as private if it does not exist.")
@click.option("--tag", default=None, help="Also tag the new commit with this (new) tag, e.g. v1.0.")
def upload(datasets, repo_id, root, revision, private, tag):
    """Verify local datasets and publish them to a Hub dataset repo in one commit.

    Uploads each dataset's manifest and shards under <dataset_id>/, rewrites the dataset card
    README.md with a return-statistics table, and tags the commit format-v<N> (N: the current
    format version) plus --tag.
    """
    from ..errors import LQVError
    from ..hub import upload_dataset

    try:
        result = upload_dataset(list(datasets), repo_id=repo_id, root=root, revision=revision,
                                private=private, tag=tag)
    except LQVError as err:
        raise cli_error(err, datasets) from None
    except ValueError as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"Uploaded {', '.join(result.dataset_ids)} to {result.repo_id}@{result.branch}, "
               f"commit {result.commit} (tags: {', '.join(result.tags)})")
    click.echo(f"Pin it: lqv-d4rl download {' '.join(result.dataset_ids)} --repo-id {result.repo_id} "
               f"--revision {result.commit}")


COMMANDS = [download, upload]
