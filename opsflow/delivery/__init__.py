"""Delivery (seed 000, GlobaLeaks; and the notification part of seed 002, AyaNova).

Tips for finalized submissions, receiver notification mails, file packages, the outgoing mail
queue with exactly-once sending and digests, notification delivery in delivery windows, and
client notifications held as whole EML messages. Plain Python: the flows in
`flows/delivery.py` claim a batch and call into here.
"""
