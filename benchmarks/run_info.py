"""What every benchmark record says about where its figures come from."""

import subprocess


def git_commit():
    """The checked-out commit, with ``-dirty`` when the working tree has changes (a figure from a
    dirty tree did not come from code on main)."""
    def git(*args):
        return subprocess.run(["git", *args], capture_output=True, text=True).stdout.strip()

    return git("rev-parse", "--short", "HEAD") + ("-dirty" if git("status", "--porcelain") else "")
