"""`make verify`: load, faults, backup and restore, hostile input, and a scan of every log."""
