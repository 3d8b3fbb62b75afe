"""The order in which the suite's test files start under ``-n 2`` (README's test command)."""

# The files that take longest (each starts dozens of sandboxed workers, or compiles Warp's kernels) start
# first, so that at the end of a parallel run neither process is left alone with one of them.
LONGEST_FIRST = ("test_adversarial.py", "test_design_e2e.py", "test_cards.py", "test_warp_training.py",
                 "test_run.py", "test_cli.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONGEST_FIRST)))  # stable: the rest keep their order
