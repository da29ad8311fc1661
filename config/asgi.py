import os

import django
from django.conf import settings
from django.core.handlers.asgi import ASGIHandler

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")


class BodyLengthHandler(ASGIHandler):
    """Django's ASGI handler, giving a body sent without Content-Length its received length.

    A chunked request (Transfer-Encoding: chunked) has no Content-Length, and DRF and Django's
    multipart parser read a missing one as 0: its body read as empty on every API ("text: This
    field is required.", "No file was submitted."). Under ASGI the body is whole before the
    request is made (read_body spools it), so its length is known; the size limits that read
    CONTENT_LENGTH (DATA_UPLOAD_MAX_MEMORY_SIZE, the upload's) then apply to it too.
    """

    async def read_body(self, receive):
        """Django's, stopped once the body passes ENGRAM_MAX_REQUEST_BYTES (every route's
        limit, uploads' included): Django spooled a body of any size to a temporary file
        before any limit was read, so one request could fill the disk. What arrived is kept,
        and create_request gives the request that size, so reading it is the routes' 413.
        A declared Content-Length over the limit never gets here (refused from the header:
        config.common.body_headers); a chunked body, with none, is counted here."""
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        received = 0

        async def counted():
            nonlocal received
            if limit is not None and received > limit:
                return {"type": "http.request", "body": b"", "more_body": False}
            message = await receive()
            received += len(message.get("body", b""))
            return message

        body_file = await super().read_body(counted)
        if limit is not None and received > limit:
            body_file.received_past_limit = received
        return body_file

    async def listen_for_disconnect(self, receive):
        async def past_the_body():
            while (message := await receive())["type"] == "http.request":
                pass  # the rest of a body read_body stopped reading: discarded, never stored
            return message

        return await super().listen_for_disconnect(past_the_body)

    def create_request(self, scope, body_file):
        request, error_response = super().create_request(scope, body_file)
        past_limit = getattr(body_file, "received_past_limit", None)
        if request is not None and past_limit is not None:
            declared = request.META.get("CONTENT_LENGTH", "")
            size = max(past_limit, int(declared) if declared.isdigit() else 0)
            request.META["CONTENT_LENGTH"] = str(size)
        elif request is not None and "CONTENT_LENGTH" not in request.META:
            body_file.seek(0, os.SEEK_END)
            size = body_file.tell()
            body_file.seek(0)
            if size:
                request.META["CONTENT_LENGTH"] = str(size)
        return request, error_response


django.setup(set_prefix=False)  # what get_asgi_application does before making the handler
application = BodyLengthHandler()

from completions.asgi import with_gateway  # noqa: E402 - needs the app registry loaded
from config.common.hosts import with_allowed_hosts  # noqa: E402
from config.cors import with_cors  # noqa: E402

# The host first: the gateway's own doors run no Django middleware (config/common/hosts.py).
application = with_allowed_hosts(with_cors(with_gateway(application)))
