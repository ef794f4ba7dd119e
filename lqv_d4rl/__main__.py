"""``python -m lqv_d4rl ...`` runs the ``lqv-d4rl`` command line."""

from .cli import main

if __name__ == "__main__":
    main()
