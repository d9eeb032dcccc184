"""The per-policy paths: each calls the sans-I/O core (:mod:`cacheway.core`) and does the
I/O (backend, store, journal).

* :mod:`.read` — read-through, every policy (single flight, fill tokens; leases in
  :mod:`.leases`, early refresh and stale-if-error in :mod:`.refresh`);
* :mod:`.write_through` — write-through and write-around;
* :mod:`.write_back` — write-back (back-pressure in :mod:`.room`, copies on a shared
  backend in :mod:`.shared_copies`; its flusher is :mod:`cacheway.writeback.flusher`);
* :mod:`.fastpaths` — the only module that inlines a backend's hit or set.
"""
