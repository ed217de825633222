"""Housekeeping of the record store (seeds 000 and 002): cleaning expired submissions and
their files, expiry reminders, hourly statistics, the notification sweeper, orphans and
vacuum. Plain Python over the records; `flows/maintenance.py` runs it batch by batch."""
