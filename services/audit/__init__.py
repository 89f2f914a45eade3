"""The audit subscriber: every event of the log as a JSON line a person can read."""
