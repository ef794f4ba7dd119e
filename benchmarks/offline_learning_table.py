"""The offline learning checks as one table: ``offline-*.json`` from a folder, normalized two ways.

For each check written by ``benchmarks/offline_learning.py``: its seed, updates and CPU seconds
trained, the best evaluation return, the check's threshold and verdict, and that return
normalized with the task's datasets on disk (``reference="dataset"``: the min and max episode
return of its random, medrep and medium levels) and with the paper's Table 1 references
(``"paper_table1"``), beside the paper's Table 1 score of the same algorithm on the same dataset
(on images, after 25k + 100k or 550k updates). Prints Markdown.

Usage: ``python benchmarks/offline_learning_table.py [docs/learning] [--root R]``.
"""

import argparse
import json
from pathlib import Path

from lqv_d4rl.paper import paper_score
from lqv_d4rl.scores import get_normalized_score


def row(check, root):
    """One Markdown row of a check's summary dict."""
    task, level = check["task"], check["dataset"].rsplit("-", 1)[-1]
    best = check["best_return"]
    last = check["evaluations"][-1] if check["evaluations"] else {"updates": 0, "cpu_s": 0.0}
    ours = get_normalized_score(task, best, "dataset", root=root)
    paper_norm = get_normalized_score(task, best, "paper_table1")
    paper = paper_score(task, level, check["algorithm"])
    verdict = "pass" if best >= check["threshold"] else "miss"
    return (f"| {check['algorithm']} | {check['dataset']} | {check['observation']} | "
            f"{check['seed']} | {last['updates']} | {last['cpu_s']:.0f} | {best:.1f} | "
            f"{check['threshold']:.1f} ({verdict}) | {ours:.2f} | {paper_norm:.2f} | "
            f"{'-' if paper is None else f'{paper[0]:.2f}'} |")


def table(folder, root):
    """The Markdown table of every ``offline-*.json`` in ``folder``."""
    lines = ["| algorithm | dataset | input | seed | updates | CPU s | best return | threshold | "
             "normalized (our datasets) | normalized (paper's references) | paper, Table 1 |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |"]
    for path in sorted(Path(folder).glob("offline-*.json")):
        lines.append(row(json.loads(path.read_text()), root))
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", default="docs/learning")
    parser.add_argument("--root", default=None, help="dataset root (default: $LQV_D4RL_ROOT)")
    args = parser.parse_args()
    print(table(args.folder, args.root))


if __name__ == "__main__":
    main()
