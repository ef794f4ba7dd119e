"""``python -m lqv_d4rl.leaderboard [OPTIONS]``: the same as ``lqv-d4rl leaderboard [OPTIONS]``."""

from lqv_d4rl.cli.leaderboard_commands import leaderboard

if __name__ == "__main__":
    leaderboard.main(prog_name="python -m lqv_d4rl.leaderboard")
