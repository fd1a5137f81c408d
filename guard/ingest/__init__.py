"""`guard ingest`: signed Leadterra webhooks and feedback-loop (ARF) complaints into the input topic.

signature.py  X-Leadterra-Signature checks (HMAC-SHA256, hex or base64, several secrets)
secrets.py    the secrets in force, read again from their files (a rotated mounted Secret)
webhook.py    a webhook body -> (campaign id, record value), pure
arf.py        an ARF report -> a `message.complained` event, pure
app.py        the HTTP routes and the producer
door.py       connections before they are requests: the cap, who makes room, malformed requests
health.py     its metrics, liveness and readiness
limits.py     how large a body can be: the door, the producer and the topic agree
"""
