"""The worker node: runs jobs assigned to it (sync tasks in child processes, async on its loop)."""
