"""Outgoing mail, the one service every area that mails uses.

`outbox` queues mails (a unique key each) and sends them exactly once as far as SMTP allows;
`smtp` holds the connection, its deadlines and the kinds of error; `backoff` spaces retries,
with jitter so that mails failed together are not retried together. Delivery, maintenance,
the license check and transfers all queue through `outbox.enqueue`.
"""
