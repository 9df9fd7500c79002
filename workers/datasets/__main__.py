"""``python -m workers.datasets``: see :mod:`workers.datasets.cli`."""

from workers.datasets.cli import main

if __name__ == "__main__":
    main()
