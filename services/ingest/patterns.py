"""The exact shape of every id and cursor the API takes, as regular expressions: the server
validates with them and the OpenAPI document publishes them, so what one accepts the other says.

Ids made by `shared.core.ids` are a prefix and 26 Crockford base32 characters holding 128 bits (so
the first is 0-7). Cursors into Redis streams are entry ids `ms-seq`; at most 19 digits each keeps
both parts below 2**64, which Redis requires."""

from __future__ import annotations

_SUFFIX = "[0-7][0-9a-hjkmnp-tv-z]{25}"

JOB_ID = f"^job_{_SUFFIX}$"
BATCH_ID = f"^batch_{_SUFFIX}$"
UPLOADED_FILE_ID = f"^file-{_SUFFIX}$"
# an uploaded file, or a batch's output or error file
FILE_ID = f"^file-{_SUFFIX}(-output|-errors)?$"
WEBHOOK_ID = f"^wh_{_SUFFIX}$"
DELIVERY_ID = "^msg_[0-9a-f]{26}$"
STREAM_ID = r"^\d{1,19}-\d{1,19}$"
# Last-Event-ID of a job's event stream: a results cursor, or `end` after the job's own event
LAST_EVENT_ID = r"^(end|\d{1,19}-\d{1,19})$"
