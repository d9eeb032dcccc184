"""Write-back internals: the dirty table, the flusher and the journal."""
