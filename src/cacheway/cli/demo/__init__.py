"""``cacheway demo`` and ``cacheway bench``: the seeded workloads (:mod:`.workloads`), the
run and its measurements (:mod:`.runner`), the kill -9 column (:mod:`.crash`, with the
child process in :mod:`.child`), the cache-pollution column (:mod:`.pollution`), the
textbook baselines (:mod:`.textbook`) and the tables, JSON and plot (:mod:`.report`).

Nothing is imported here, so ``python -m cacheway.cli.demo.child`` starts fast.
"""
