"""The sans-I/O core: plain objects that decide and never do I/O.

What is dirty and what a batch holds (:mod:`.dirty`), what to retry and when
(:mod:`.schedule`), what a journal record says (:mod:`.journal_records`) and which
read-fill may land (:mod:`.fills`). Nothing here imports a driver, takes a lock, starts a
thread or reads a clock: the fronts (the thread front in :mod:`cacheway.cache`, the
asyncio front in :mod:`cacheway.aio`) drive these objects and own the I/O, so each front
and the tests share the same decisions.
"""
